//! Micro benchmarks of event-time bookkeeping: the watermark tracker over four input channels,
//! window assignment (tumbling and sliding) and timer registration and firing on the heap and
//! in LMDB.
//!
//! `cargo bench -p eichhorn-benches --bench time`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use eichhorn::operator::window::{TimeDomain, WindowAssign, WindowAssigner};
use eichhorn::state::{KeyGroupRange, KeyedBackendConfig, StateBackendKind, splitmix64};
use eichhorn::time::{TimerService, Watermark, WatermarkTracker};

const OPS: u64 = 1_000;

fn watermark_tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("time/watermark_tracker");
    group.throughput(Throughput::Elements(OPS));
    group.bench_function("four_channels", |b| {
        let mut tracker = WatermarkTracker::new(4);
        let mut time = 0i64;
        b.iter(|| {
            for i in 0..OPS {
                time += 1;
                black_box(tracker.handle_watermark((i % 4) as usize, Watermark::new(time)));
            }
        });
    });
    group.finish();
}

fn window_assignment(c: &mut Criterion) {
    let mut group = c.benchmark_group("time/window_assign");
    group.throughput(Throughput::Elements(OPS));
    let assigners = [
        (
            "tumbling_1s",
            WindowAssigner::tumbling(TimeDomain::EventTime, 1_000, 0).expect("valid"),
        ),
        (
            "sliding_10s_1s",
            WindowAssigner::sliding(TimeDomain::EventTime, 10_000, 1_000, 0).expect("valid"),
        ),
    ];
    for (name, assigner) in assigners {
        group.bench_function(name, |b| {
            let mut windows = Vec::new();
            let mut g = 0u64;
            b.iter(|| {
                for _ in 0..OPS {
                    g += 1;
                    let time = assigner
                        .assignment_time(Some((g / 100) as i64), 0)
                        .expect("a timestamp");
                    windows.clear();
                    assigner.assign(time, &mut windows).expect("assigned");
                    black_box(windows.len());
                }
            });
        });
    }
    group.finish();
}

fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("time/timers");
    group.throughput(Throughput::Elements(OPS));
    for (name, kind) in [
        ("memory", StateBackendKind::Memory),
        ("lmdb", StateBackendKind::Lmdb),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = KeyedBackendConfig {
            kind,
            local_dir: dir.path().join("timers"),
            max_parallelism: 128,
            key_groups: KeyGroupRange::for_subtask(128, 1, 0),
            cache_entries: 100_000,
            lmdb_map_size: 1 << 30,
        };
        let mut service = TimerService::<u64, ()>::open(&config).expect("the service opens");
        let mut fired = Vec::new();
        let mut g = 0u64;
        // Per iteration: 1,000 registrations over 10,000 keys (one per key and second, as a
        // window operator's), then a watermark that fires the seconds that ended.
        group.bench_function(format!("register_and_fire_{name}"), |b| {
            b.iter(|| {
                for _ in 0..OPS {
                    let key = splitmix64(g) % 10_000;
                    let end = (g / 100_000) as i64 * 1_000 + 999;
                    g += 1;
                    service
                        .register_event_time_timer(key, (), end)
                        .expect("registered");
                }
                fired.clear();
                let watermark = (g / 100_000) as i64 * 1_000 - 1;
                service
                    .advance_watermark(watermark, &mut fired)
                    .expect("fired");
                black_box(fired.len())
            });
        });
    }
    group.finish();
}

/// The group lives in a private module: `criterion_group!` defines a public function.
mod group {
    criterion::criterion_group!(
        benches,
        super::watermark_tracker,
        super::window_assignment,
        super::timers
    );
}

criterion_main!(group::benches);
