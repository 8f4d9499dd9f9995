//! Windows and interval joins give the same results whichever backend holds their state: the
//! same jobs with the memory backend and with LMDB behind a write-back cache much smaller than
//! the number of keys (so window contents and join buffers really live in LMDB and are read
//! back from it), at parallelism 1, 2 and 4, against the memory backend at parallelism 1.

use eichhorn::operator::window::trigger::{CountTrigger, EventTimeTrigger, PurgingTrigger};
use eichhorn::operator::window::{
    CountEvictor, TimeDomain, TimeWindow, WindowAssigner, WindowContext,
};
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;
use eichhorn::time::WatermarkStrategy;

/// `(key, timestamp, value)`.
type Reading = (u32, i64, i64);

/// 6,000 readings of 500 keys over about 6 s of event time, out of order by up to 300 ms, with a
/// few very late ones.
fn readings() -> Vec<Reading> {
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..6_000i64)
        .map(|i| {
            let key = (next() % 500) as u32;
            let jitter = (next() % 300) as i64;
            let very_late = if next() % 50 == 0 { 2_000 } else { 0 };
            (
                key,
                (i - jitter - very_late).max(0),
                (next() % 1_000) as i64,
            )
        })
        .collect()
}

/// A window's key, bounds and what it emitted.
type Firing = (u32, i64, i64, i64, u64);

#[operator(new = false)]
#[derive(Clone)]
struct SumCount;

impl AggregateFunction<Reading> for SumCount {
    type Acc = (i64, u64);
    type Out = (i64, u64);
    fn create_accumulator(&mut self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&mut self, value: Reading, (sum, count): (i64, u64)) -> (i64, u64) {
        (sum + value.2, count + 1)
    }
    fn get_result(&mut self, acc: &(i64, u64)) -> (i64, u64) {
        *acc
    }
    fn merge(&mut self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

#[operator(new = false)]
#[derive(Clone)]
struct WithWindow;

impl ProcessWindowFunction<u32, (i64, u64)> for WithWindow {
    type Out = Firing;
    fn process(
        &mut self,
        key: &u32,
        ctx: &WindowContext,
        elements: Vec<(i64, u64)>,
        out: &mut Collector<'_, Firing>,
    ) {
        for (sum, count) in elements {
            out.collect((*key, ctx.window.start, ctx.window.end, sum, count));
        }
    }
}

/// Emits every element a window holds (all elements: the generic path).
#[operator(new = false)]
#[derive(Clone)]
struct Elements;

impl ProcessWindowFunction<u32, Reading> for Elements {
    type Out = Firing;
    fn process(
        &mut self,
        key: &u32,
        ctx: &WindowContext,
        elements: Vec<Reading>,
        out: &mut Collector<'_, Firing>,
    ) {
        let window: TimeWindow = ctx.window;
        let sum = elements.iter().map(|r| r.2).sum();
        out.collect((*key, window.start, window.end, sum, elements.len() as u64));
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Tumbling,
    Sliding,
    Sessions,
    /// Tumbling windows with a count trigger and an evictor: contents per window and timers.
    CountTriggered,
    /// Session windows with all elements and a purging trigger: merging sets in the backend.
    MergingGeneric,
}

/// Runs `job` on `backend` at `parallelism`; returns its firings (sorted) and late records.
async fn run(job: Job, backend: StateBackendKind, parallelism: u32) -> (Vec<Firing>, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.set_state_backend(backend);
    env.configure(|c| {
        c.batch_records_max = 64;
        c.local_state_dir = Some(dir.path().to_path_buf());
        // Far fewer entries than keys: most accesses miss and go to LMDB.
        c.state_cache_entries = 16;
    });
    let keyed = env
        .from_collection(readings())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(300)
                .with_timestamp_assigner(|r: &Reading, _| r.1),
        )
        .set_parallelism(1)
        .key_by(|r: &Reading| r.0);
    let event = TimeDomain::EventTime;
    let firings = match job {
        Job::Tumbling => keyed
            .window(WindowAssigner::tumbling(event, 500, 0).expect("valid"))
            .allowed_lateness(400)
            .aggregate_with_process(SumCount, WithWindow),
        Job::Sliding => keyed
            .window(WindowAssigner::sliding(event, 1_000, 250, 0).expect("valid"))
            .allowed_lateness(200)
            .aggregate_with_process(SumCount, WithWindow),
        Job::Sessions => keyed
            .window(WindowAssigner::session(event, 120).expect("valid"))
            .allowed_lateness(300)
            .aggregate_with_process(SumCount, WithWindow),
        Job::CountTriggered => keyed
            .window(WindowAssigner::tumbling(event, 500, 0).expect("valid"))
            .trigger(CountTrigger::of(3))
            .evictor(CountEvictor::of(2))
            .process(Elements),
        Job::MergingGeneric => keyed
            .window(WindowAssigner::session(event, 120).expect("valid"))
            .trigger(PurgingTrigger::of(EventTimeTrigger))
            .allowed_lateness(300)
            .process(Elements),
    }
    .collect_sink();
    let result = env
        .execute("windows on backends")
        .await
        .unwrap_or_else(|e| panic!("{job:?} {backend:?} P={parallelism}: {e}"));
    let late = result.operators.iter().map(|m| m.late_records).sum();
    let mut firings = firings.take();
    firings.sort_unstable();
    (firings, late)
}

#[tokio::test]
async fn windows_give_the_same_results_on_both_backends() {
    for job in [
        Job::Tumbling,
        Job::Sliding,
        Job::Sessions,
        Job::CountTriggered,
        Job::MergingGeneric,
    ] {
        let (expected, expected_late) = run(job, StateBackendKind::Memory, 1).await;
        assert!(expected.len() > 300, "{job:?}: {} firings", expected.len());
        assert!(expected_late > 0, "{job:?}: no late records");
        for parallelism in [1, 2, 4] {
            for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
                let context = format!("{job:?} {backend:?} P={parallelism}");
                let (firings, late) = run(job, backend, parallelism).await;
                assert_eq!(firings.len(), expected.len(), "{context}");
                assert_eq!(firings, expected, "{context}");
                assert_eq!(late, expected_late, "{context}");
            }
        }
    }
}

type Event = (u32, i64, u32);

/// Both sides of a join: 200 keys, timestamps jittered by less than 40 ms.
fn events(seed: u64, count: i64) -> Vec<Event> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..count)
        .map(|i| ((next() % 200) as u32, i + (next() % 40) as i64, i as u32))
        .collect()
}

#[operator(new = false)]
#[derive(Clone)]
struct Ids;

impl ProcessJoinFunction<Event, Event> for Ids {
    type Out = (u32, u32, i64);
    fn process_element(
        &mut self,
        left: Event,
        right: Event,
        ctx: &JoinContext,
        out: &mut Collector<'_, (u32, u32, i64)>,
    ) {
        out.collect((left.2, right.2, ctx.timestamp()));
    }
}

#[tokio::test]
async fn interval_joins_give_the_same_results_on_both_backends() {
    let left = events(1, 3_000);
    let right = events(2, 3_000);
    let mut expected = Vec::new();
    for l in &left {
        for r in &right {
            if l.0 == r.0 && r.1 >= l.1 - 30 && r.1 <= l.1 + 20 {
                expected.push((l.2, r.2, l.1.max(r.1)));
            }
        }
    }
    expected.sort_unstable();
    assert!(expected.len() > 200, "{} pairs", expected.len());
    for parallelism in [1, 2, 4] {
        for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            let dir = tempfile::tempdir().expect("temp dir");
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.set_state_backend(backend);
            env.configure(|c| {
                c.batch_records_max = 64;
                c.local_state_dir = Some(dir.path().to_path_buf());
                c.state_cache_entries = 16;
            });
            let stamped = |data: Vec<Event>| {
                env.from_collection(data)
                    .assign_timestamps_and_watermarks(
                        WatermarkStrategy::for_bounded_out_of_orderness_every_event(40)
                            .with_timestamp_assigner(|e: &Event, _| e.1),
                    )
                    .set_parallelism(1)
                    .key_by(|e: &Event| e.0)
            };
            let out = stamped(left.clone())
                .interval_join(stamped(right.clone()))
                .between(-30, 20)
                .process(Ids)
                .collect_sink();
            let result = env
                .execute("interval join on backends")
                .await
                .unwrap_or_else(|e| panic!("{backend:?} P={parallelism}: {e}"));
            let mut pairs = out.take();
            pairs.sort_unstable();
            assert_eq!(pairs, expected, "{backend:?} P={parallelism}");
            assert_eq!(
                result.operator("Interval Join").map(|m| m.late_records),
                Some(0)
            );
        }
    }
}
