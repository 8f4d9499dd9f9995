//! Interval join, window join, co-group and keyed co-process functions against sequential
//! oracles at parallelism 1, 2 and 4.

use std::collections::BTreeMap;

use eichhorn::operator::window::{TimeDomain, WindowAssigner};
use eichhorn::prelude::*;
use eichhorn::state::ValueState;
use eichhorn::time::WatermarkStrategy;

type Event = (u8, i64, u32); // (key, timestamp, id)

/// Events with timestamps jittered by less than `jitter` (so nothing is late with that
/// out-of-orderness).
fn events(seed: u64, count: i64, jitter: i64) -> Vec<Event> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..count)
        .map(|i| {
            (
                (next() % 4) as u8,
                i * 10 + (next() % jitter as u64) as i64,
                i as u32,
            )
        })
        .collect()
}

fn stamped(env: &StreamEnv, data: Vec<Event>, out_of_orderness: i64) -> DataStream<Event> {
    env.from_collection(data)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(out_of_orderness)
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .set_parallelism(1)
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
        assert_eq!(ctx.timestamp(), left.1.max(right.1));
        out.collect((left.2, right.2, ctx.timestamp()));
    }
}

#[tokio::test]
async fn interval_join_finds_every_pair() {
    let left = events(1, 400, 40);
    let right = events(2, 400, 40);
    for (lower, upper, lower_exclusive, upper_exclusive) in [
        (-30, 20, false, false),
        (0, 50, true, true),
        (-100, -10, false, true),
    ] {
        let lo = lower + i64::from(lower_exclusive);
        let hi = upper - i64::from(upper_exclusive);
        let mut expected = Vec::new();
        for l in &left {
            for r in &right {
                if l.0 == r.0 && r.1 >= l.1 + lo && r.1 <= l.1 + hi {
                    expected.push((l.2, r.2, l.1.max(r.1)));
                }
            }
        }
        expected.sort();
        assert!(!expected.is_empty());
        for parallelism in [1, 2, 4] {
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.configure(|c| c.batch_records_max = 16);
            let l = stamped(&env, left.clone(), 40).key_by(|e: &Event| e.0);
            let r = stamped(&env, right.clone(), 40).key_by(|e: &Event| e.0);
            let mut joined = l.interval_join(r).between(lower, upper);
            if lower_exclusive {
                joined = joined.lower_bound_exclusive();
            }
            if upper_exclusive {
                joined = joined.upper_bound_exclusive();
            }
            let out = joined.process(Ids).collect_sink();
            let result = env.execute("interval join").await.unwrap();
            let mut pairs = out.take();
            pairs.sort();
            assert_eq!(
                pairs, expected,
                "bounds {lower}..{upper}, parallelism {parallelism}"
            );
            let join = result.operator("Interval Join").unwrap();
            assert_eq!(join.late_records, 0);
        }
    }
}

#[tokio::test]
async fn window_join_and_co_group_match_oracles() {
    let left = events(3, 300, 40);
    let right = events(4, 200, 40);
    let window = |t: i64| t - t.rem_euclid(250);
    let mut expected_join = Vec::new();
    let mut groups: BTreeMap<(u8, i64), (Vec<u32>, Vec<u32>)> = BTreeMap::new();
    for l in &left {
        groups.entry((l.0, window(l.1))).or_default().0.push(l.2);
        for r in &right {
            if l.0 == r.0 && window(l.1) == window(r.1) {
                expected_join.push((l.2, r.2));
            }
        }
    }
    for r in &right {
        groups.entry((r.0, window(r.1))).or_default().1.push(r.2);
    }
    expected_join.sort();
    let expected_groups: Vec<(u8, usize, usize)> = groups
        .iter()
        .map(|((k, _), (a, b))| (*k, a.len(), b.len()))
        .collect();
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let assigner = || WindowAssigner::tumbling(TimeDomain::EventTime, 250, 0).unwrap();
        let joined = stamped(&env, left.clone(), 40)
            .join(stamped(&env, right.clone(), 40))
            .window(|e: &Event| e.0, |e: &Event| e.0, assigner())
            .join(|a: Event, b: Event| (a.2, b.2))
            .collect_sink();
        let grouped = stamped(&env, left.clone(), 40)
            .join(stamped(&env, right.clone(), 40))
            .window(|e: &Event| e.0, |e: &Event| e.0, assigner())
            .co_group(
                |key: &u8,
                 a: Vec<Event>,
                 b: Vec<Event>,
                 out: &mut Collector<'_, (u8, usize, usize)>| {
                    out.collect((*key, a.len(), b.len()));
                },
            )
            .collect_sink();
        env.execute("window join").await.unwrap();
        let mut pairs = joined.take();
        pairs.sort();
        assert_eq!(pairs, expected_join, "join, parallelism {parallelism}");
        let mut groups = grouped.take();
        groups.sort();
        let mut expected = expected_groups.clone();
        expected.sort();
        assert_eq!(groups, expected, "co-group, parallelism {parallelism}");
    }
}

/// Sums per key: +1 per element of the first stream, +1000 per element of the second; emits the
/// total when the final watermark fires the key's timer. Independent of how inputs interleave.
#[operator(new = false)]
#[derive(Clone)]
struct Totals {
    total: ValueState<u64>,
}

impl KeyedCoProcessFunction for Totals {
    type Key = u8;
    type In1 = Event;
    type In2 = Event;
    type Out = (u8, u64);
    fn process_element1(
        &mut self,
        _v: Event,
        ctx: &mut KeyedContext<'_, '_, u8>,
        _out: &mut Collector<'_, (u8, u64)>,
    ) {
        let total = self.total.value(ctx).unwrap_or(0);
        self.total.update(ctx, total + 1);
        ctx.register_event_time_timer(1_000_000);
    }
    fn process_element2(
        &mut self,
        _v: Event,
        ctx: &mut KeyedContext<'_, '_, u8>,
        _out: &mut Collector<'_, (u8, u64)>,
    ) {
        let total = self.total.value(ctx).unwrap_or(0);
        self.total.update(ctx, total + 1_000);
        ctx.register_event_time_timer(1_000_000);
    }
    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, u8>,
        out: &mut Collector<'_, (u8, u64)>,
    ) {
        assert_eq!(timestamp, 1_000_000);
        let total = self.total.value(ctx).unwrap_or(0);
        out.collect((*ctx.current_key(), total));
    }
}

#[tokio::test]
async fn keyed_co_process_shares_state_and_timers_between_inputs() {
    let first = events(5, 300, 10);
    let second = events(6, 100, 10);
    let mut expected: BTreeMap<u8, u64> = BTreeMap::new();
    for e in &first {
        *expected.entry(e.0).or_default() += 1;
    }
    for e in &second {
        *expected.entry(e.0).or_default() += 1_000;
    }
    let expected: Vec<(u8, u64)> = expected.into_iter().collect();
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let out = stamped(&env, first.clone(), 10)
            .connect(stamped(&env, second.clone(), 10))
            .key_by(|e: &Event| e.0, |e: &Event| e.0)
            .process(Totals {
                total: ValueState::new("total"),
            })
            .collect_sink();
        env.execute("keyed co-process").await.unwrap();
        let mut totals = out.take();
        totals.sort();
        assert_eq!(totals, expected, "parallelism {parallelism}");
    }
}

/// Routes elements of the second stream to a side output.
#[operator(new = false)]
#[derive(Clone)]
struct Route {
    second: OutputTag<u32>,
}

impl CoProcessFunction<u32, u32> for Route {
    type Out = u32;
    fn process_element1(
        &mut self,
        v: u32,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, u32>,
    ) {
        out.collect(v);
    }
    fn process_element2(
        &mut self,
        v: u32,
        ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, u32>,
    ) {
        ctx.output(&self.second, v);
    }
}

#[tokio::test]
async fn co_process_function_with_side_output() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let tag = OutputTag::<u32>::new("second");
    let routed = env
        .from_collection((0..100u32).collect())
        .connect(env.from_collection((100..150u32).collect()))
        .process(Route {
            second: tag.clone(),
        });
    let side = routed.side_output(&tag).collect_sink();
    let main = routed.collect_sink();
    env.execute("co-process").await.unwrap();
    let mut main = main.take();
    main.sort();
    let mut side = side.take();
    side.sort();
    assert_eq!(main, (0..100).collect::<Vec<_>>());
    assert_eq!(side, (100..150).collect::<Vec<_>>());
}
