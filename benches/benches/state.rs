//! Micro benchmarks of keyed state: a read-modify-write of a `u64` per key (Flink's
//! `ValueState` get then put) through the [`ValueState`] handle and through the runtime's
//! [`ValueTable`] fast path, on the memory backend and on LMDB, over 10,000 keys.
//!
//! `cargo bench -p eichhorn-benches --bench state`
//!
//! [`ValueTable`]: eichhorn::state::ValueTable

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use eichhorn::state::{
    KeyGroupRange, KeyedBackendConfig, KeyedStateStore, StateBackendKind, ValueState, splitmix64,
};

const KEYS: u64 = 10_000;
const OPS: u64 = 1_000;
const MAX_PARALLELISM: u32 = 128;

fn store(kind: StateBackendKind, dir: &tempfile::TempDir) -> KeyedStateStore<u64> {
    let config = KeyedBackendConfig {
        kind,
        local_dir: dir.path().join("state"),
        max_parallelism: MAX_PARALLELISM,
        key_groups: KeyGroupRange::for_subtask(MAX_PARALLELISM, 1, 0),
        cache_entries: 100_000,
        lmdb_map_size: 1 << 30,
    };
    KeyedStateStore::open(config).expect("the store opens")
}

fn get_put(c: &mut Criterion) {
    let mut group = c.benchmark_group("state/get_put");
    group.throughput(Throughput::Elements(OPS));
    for (name, kind) in [
        ("memory", StateBackendKind::Memory),
        ("lmdb", StateBackendKind::Lmdb),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = store(kind, &dir);
        let count = ValueState::<u64>::new("count");
        let mut next = 0u64;
        group.bench_function(format!("value_state_{name}"), |b| {
            b.iter(|| {
                for _ in 0..OPS {
                    let key = splitmix64(next) % KEYS;
                    next += 1;
                    let mut scope = store.scope(key, 0);
                    let value = count.value(&mut scope).unwrap_or(0);
                    count.update(&mut scope, value + 1);
                    scope.into_result().expect("state access works");
                }
            });
        });
        group.bench_function(format!("value_table_{name}"), |b| {
            b.iter(|| {
                let mut table = store
                    .value_table::<u64>("table")
                    .expect("the table resolves");
                for _ in 0..OPS {
                    let key = splitmix64(next) % KEYS;
                    next += 1;
                    let value = table.get(&key).expect("a read").copied().unwrap_or(0);
                    table.insert(key, value + 1).expect("a write");
                }
                black_box(next)
            });
        });
    }
    group.finish();
}

/// The group lives in a private module: `criterion_group!` defines a public function.
mod group {
    criterion::criterion_group!(benches, super::get_put);
}

criterion_main!(group::benches);
