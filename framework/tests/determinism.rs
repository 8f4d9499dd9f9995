//! Determinism: the same job on a current-thread runtime with paused time produces the same
//! output in the same order, run after run. This is what lets the simulator drive the runtime.

use eichhorn::prelude::*;

fn job(seed: u64) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let env = StreamEnv::new();
        env.set_parallelism(4);
        env.configure(|c| {
            c.seed = seed;
            c.batch_records_max = 32;
            c.credits_per_channel = 2;
        });
        let numbers = env.from_generator(5_000, |g| g);
        let words = env
            .from_collection((0..500u64).map(|i| format!("w{}", i % 17)).collect())
            .rebalance();
        let shuffled = numbers.shuffle().map(|g| g * 3).set_parallelism(3);
        let sums = shuffled
            .key_by(|g| g % 11)
            .reduce(|a, b| a + b)
            .map(|s| format!("sum {s}"));
        let out = sums
            .connect(words)
            .co_map(|s| s, |w| format!("word {w}"))
            .rescale()
            .map(|s| s)
            .set_parallelism(2)
            .collect_sink();
        env.execute("determinism").await.unwrap();
        out.take()
    })
}

#[test]
fn same_seed_same_output_order() {
    let first = job(7);
    assert_eq!(first.len(), 5_500);
    for _ in 0..3 {
        assert_eq!(job(7), first);
    }
}
