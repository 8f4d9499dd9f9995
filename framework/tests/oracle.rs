//! Oracle tests: every transformation at parallelism 1, 2 and 4 against a plain sequential
//! computation of the same result.
//!
//! Parallel runs may interleave subtasks differently, so outputs are compared as multisets, except
//! where the API promises an order: the updates of one key in a rolling aggregation arrive in input
//! order (one source subtask, one owning subtask per key).

use std::collections::BTreeMap;

use eichhorn::prelude::*;

const PARALLELISMS: [u32; 3] = [1, 2, 4];

fn input() -> Vec<i64> {
    // A deterministic, irregular sequence with repeats and negatives.
    (0..2_000i64)
        .map(|i| (i * 7_919 + 13) % 1_009 - 500)
        .collect()
}

fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values
}

fn env(parallelism: u32) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    // Small batches and few credits so that every run crosses many batch boundaries and credit
    // stalls, not just one batch per channel.
    env.configure(|c| {
        c.batch_records_max = 64;
        c.credits_per_channel = 2;
    });
    env
}

/// Groups `(key, value)` pairs by key, keeping their order.
fn per_key<K: Ord, V>(pairs: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, Vec<V>> {
    let mut map: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    map
}

#[tokio::test]
async fn map_filter_flat_map() {
    let expected: Vec<i64> = input()
        .into_iter()
        .map(|x| x * 3)
        .filter(|x| x % 2 == 0)
        .flat_map(|x| vec![x, x + 1])
        .collect();
    for p in PARALLELISMS {
        let env = env(p);
        let out = env
            .from_collection(input())
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| vec![x, x + 1])
            .collect_sink();
        env.execute("map-filter-flat_map").await.unwrap();
        assert_eq!(
            sorted(out.take()),
            sorted(expected.clone()),
            "parallelism {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_generator_source_covers_every_index_once() {
    for p in PARALLELISMS {
        let env = env(p);
        let out = env.from_generator(10_000, |g| g * g).collect_sink();
        env.execute("generator").await.unwrap();
        let expected: Vec<u64> = (0..10_000u64).map(|g| g * g).collect();
        assert_eq!(sorted(out.take()), expected, "parallelism {p}");
    }
}

#[tokio::test]
async fn rolling_aggregations_per_key_order() {
    let data: Vec<(u8, i64, i64)> = input()
        .into_iter()
        .enumerate()
        .map(|(i, x)| ((x.rem_euclid(5)) as u8, x, i as i64))
        .collect();

    // Sequential oracles, per key, in input order.
    let mut reduce = BTreeMap::new();
    let mut sum: BTreeMap<u8, (u8, i64, i64)> = BTreeMap::new();
    let mut min: BTreeMap<u8, (u8, i64, i64)> = BTreeMap::new();
    let mut max: BTreeMap<u8, (u8, i64, i64)> = BTreeMap::new();
    let mut min_by: BTreeMap<u8, (u8, i64, i64)> = BTreeMap::new();
    let mut max_by: BTreeMap<u8, (u8, i64, i64)> = BTreeMap::new();
    let (mut e_reduce, mut e_sum, mut e_min, mut e_max, mut e_min_by, mut e_max_by) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for &(k, x, i) in &data {
        let r = reduce
            .entry(k)
            .and_modify(|a: &mut i64| *a += x)
            .or_insert(x);
        e_reduce.push((k, *r));
        let s = sum.entry(k).and_modify(|a| a.1 += x).or_insert((k, x, i));
        e_sum.push(*s);
        let m = min
            .entry(k)
            .and_modify(|a| a.1 = a.1.min(x))
            .or_insert((k, x, i));
        e_min.push(*m);
        let m = max
            .entry(k)
            .and_modify(|a| a.1 = a.1.max(x))
            .or_insert((k, x, i));
        e_max.push(*m);
        let m = min_by
            .entry(k)
            .and_modify(|a| {
                if x < a.1 {
                    *a = (k, x, i)
                }
            })
            .or_insert((k, x, i));
        e_min_by.push(*m);
        let m = max_by
            .entry(k)
            .and_modify(|a| {
                if x > a.1 {
                    *a = (k, x, i)
                }
            })
            .or_insert((k, x, i));
        e_max_by.push(*m);
    }

    for p in PARALLELISMS {
        let env = env(p);
        let source = env.from_collection(data.clone());
        let keyed = source.key_by(|t: &(u8, i64, i64)| t.0);
        let o_reduce = keyed
            .clone()
            .map(|(k, x, _)| (k, x))
            .key_by(|t: &(u8, i64)| t.0)
            .reduce(|a, b| (a.0, a.1 + b.1))
            .collect_sink();
        let o_sum = keyed.clone().sum(|t| &mut t.1).collect_sink();
        let o_min = keyed.clone().min(|t| &mut t.1).collect_sink();
        let o_max = keyed.clone().max(|t| &mut t.1).collect_sink();
        let o_min_by = keyed.clone().min_by(|t| t.1).collect_sink();
        let o_max_by = keyed.max_by(|t| t.1).collect_sink();
        env.execute("rolling").await.unwrap();

        let by_key = |v: Vec<(u8, i64, i64)>| per_key(v.into_iter().map(|t| (t.0, t)));
        assert_eq!(
            per_key(o_reduce.take()),
            per_key(e_reduce.clone()),
            "reduce, parallelism {p}"
        );
        assert_eq!(
            by_key(o_sum.take()),
            by_key(e_sum.clone()),
            "sum, parallelism {p}"
        );
        assert_eq!(
            by_key(o_min.take()),
            by_key(e_min.clone()),
            "min, parallelism {p}"
        );
        assert_eq!(
            by_key(o_max.take()),
            by_key(e_max.clone()),
            "max, parallelism {p}"
        );
        assert_eq!(
            by_key(o_min_by.take()),
            by_key(e_min_by.clone()),
            "min_by, parallelism {p}"
        );
        assert_eq!(
            by_key(o_max_by.take()),
            by_key(e_max_by.clone()),
            "max_by, parallelism {p}"
        );
    }
}

#[tokio::test]
async fn key_by_sends_each_key_to_one_subtask() {
    #[operator(new = false)]
    #[derive(Clone)]
    struct TagSubtask {
        index: u32,
    }
    impl MapFunction<(u32, u32)> for TagSubtask {
        type Out = (u32, u32);
        fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
            self.index = ctx.subtask_index;
            Ok(())
        }
        fn map(&mut self, (key, _): (u32, u32)) -> (u32, u32) {
            (key, self.index)
        }
    }
    for p in PARALLELISMS {
        let env = env(p);
        let out = env
            .from_collection((0..3_000u32).map(|i| (i % 97, i)).collect())
            .key_by(|t: &(u32, u32)| t.0)
            .into_stream()
            .map_function(TagSubtask { index: 0 })
            .collect_sink();
        env.execute("key_by").await.unwrap();
        let mut owner: BTreeMap<u32, u32> = BTreeMap::new();
        for (key, subtask) in out.take() {
            let expected = eichhorn::state::subtask_for_key_group(
                eichhorn::state::key_group_for_key(&key, 128),
                128,
                p,
            );
            assert_eq!(subtask, expected, "key {key} at parallelism {p}");
            assert_eq!(*owner.entry(key).or_insert(subtask), subtask);
        }
    }
}

#[tokio::test]
async fn union_of_streams_with_different_parallelism() {
    for p in PARALLELISMS {
        let env = env(p);
        let a = env.from_collection((0..500i64).collect());
        let b = env.from_generator(700, |g| 10_000 + g as i64);
        let c = env
            .from_collection((0..300i64).map(|x| -x).collect())
            .map(|x| x * 2)
            .set_parallelism(1);
        let out = a.union([b, c]).map(|x| x + 1).collect_sink();
        env.execute("union").await.unwrap();
        let mut expected: Vec<i64> = (0..500).map(|x| x + 1).collect();
        expected.extend((0..700).map(|g| 10_000 + g + 1));
        expected.extend((0..300).map(|x| -x * 2 + 1));
        assert_eq!(sorted(out.take()), sorted(expected), "parallelism {p}");
    }
}

#[tokio::test]
async fn connect_co_map_and_co_flat_map() {
    let numbers: Vec<i64> = input();
    let words: Vec<String> = (0..400).map(|i| format!("w{} x{}", i % 13, i)).collect();
    let mut expected_map: Vec<String> = numbers.iter().map(|n| format!("n{n}")).collect();
    expected_map.extend(words.iter().map(|w| format!("s{w}")));
    let mut expected_flat: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
    expected_flat.extend(words.iter().flat_map(|w| w.split(' ').map(str::to_string)));
    for p in PARALLELISMS {
        let env = env(p);
        let n = env.from_collection(numbers.clone());
        let w = env.from_collection(words.clone()).rebalance();
        let mapped = n
            .clone()
            .connect(w.clone())
            .co_map(|n| format!("n{n}"), |s| format!("s{s}"))
            .collect_sink();
        let flat = n
            .connect(w)
            .co_flat_map(
                |n: i64| vec![n.to_string()],
                |s: String| s.split(' ').map(str::to_string).collect::<Vec<_>>(),
            )
            .collect_sink();
        env.execute("connect").await.unwrap();
        assert_eq!(
            sorted(mapped.take()),
            sorted(expected_map.clone()),
            "co_map, parallelism {p}"
        );
        assert_eq!(
            sorted(flat.take()),
            sorted(expected_flat.clone()),
            "co_flat_map, parallelism {p}"
        );
    }
}

#[operator(new = false)]
#[derive(Clone)]
struct Classify {
    negative: OutputTag<i64>,
    big: OutputTag<String>,
}

impl ProcessFunction<i64> for Classify {
    type Out = i64;
    fn process_element(
        &mut self,
        value: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, i64>,
    ) {
        if value < 0 {
            ctx.output(&self.negative, value);
        } else {
            out.collect(value);
        }
        if value > 400 {
            ctx.output(&self.big, format!("big {value}"));
        }
    }
}

#[tokio::test]
async fn process_with_side_outputs() {
    let data = input();
    let expected_main: Vec<i64> = data.iter().copied().filter(|v| *v >= 0).collect();
    let expected_negative: Vec<i64> = data
        .iter()
        .copied()
        .filter(|v| *v < 0)
        .map(|v| -v)
        .collect();
    let expected_big: Vec<String> = data
        .iter()
        .filter(|v| **v > 400)
        .map(|v| format!("big {v}"))
        .collect();
    for p in PARALLELISMS {
        let env = env(p);
        let negative = OutputTag::<i64>::new("negative");
        let big = OutputTag::<String>::new("big");
        let classified = env
            .from_collection(data.clone())
            .rebalance()
            .process(Classify {
                negative: negative.clone(),
                big: big.clone(),
            });
        let main = classified.clone().collect_sink();
        // A side output consumed inside the chain and another across a shuffle.
        let negatives = classified.side_output(&negative).map(|v| -v).collect_sink();
        let bigs = classified.side_output(&big).rebalance().collect_sink();
        let result = env.execute("side outputs").await.unwrap();
        assert_eq!(
            sorted(main.take()),
            sorted(expected_main.clone()),
            "main, parallelism {p}"
        );
        assert_eq!(
            sorted(negatives.take()),
            sorted(expected_negative.clone()),
            "negative, parallelism {p}"
        );
        assert_eq!(
            sorted(bigs.take()),
            sorted(expected_big.clone()),
            "big, parallelism {p}"
        );
        let process = result.operator("Process").unwrap();
        assert_eq!(process.records_in, data.len() as u64);
        assert_eq!(
            process.records_out,
            (expected_main.len() + expected_negative.len() + expected_big.len()) as u64
        );
    }
}

/// Maps every element to (subtask index of the consumer, element).
#[operator(new = false)]
#[derive(Clone)]
struct WhereAmI {
    index: u32,
}

impl MapFunction<u64> for WhereAmI {
    type Out = (u32, u64);
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.index = ctx.subtask_index;
        Ok(())
    }
    fn map(&mut self, value: u64) -> (u32, u64) {
        (self.index, value)
    }
}

/// Runs `count` elements from a source at `source_p` through `partition` into a map at
/// `target_p` that tags each element with the subtask that received it.
async fn route(
    source_p: u32,
    target_p: u32,
    count: u64,
    partition: impl FnOnce(DataStream<u64>) -> DataStream<u64>,
) -> Vec<(u32, u64)> {
    let env = env(source_p);
    let source = env.from_generator(count, |g| g);
    let out = partition(source)
        .map_function(WhereAmI { index: 0 })
        .set_parallelism(target_p)
        .collect_sink();
    env.execute("partitioning").await.unwrap();
    let mut received = out.take();
    received.sort();
    received
}

fn values(received: &[(u32, u64)]) -> Vec<u64> {
    sorted(received.iter().map(|(_, v)| *v).collect())
}

#[tokio::test]
async fn partitioners_deliver_everything_where_they_should() {
    let count = 1_000u64;
    let all: Vec<u64> = (0..count).collect();
    for p in PARALLELISMS {
        for q in PARALLELISMS {
            // rebalance: everything once, spread evenly.
            let r = route(p, q, count, |s| s.rebalance()).await;
            assert_eq!(values(&r), all, "rebalance {p}->{q}");
            let mut per_subtask = vec![0u64; q as usize];
            for (s, _) in &r {
                per_subtask[*s as usize] += 1;
            }
            let (lo, hi) = (
                per_subtask.iter().min().unwrap(),
                per_subtask.iter().max().unwrap(),
            );
            assert!(
                hi - lo <= u64::from(p),
                "rebalance {p}->{q} uneven: {per_subtask:?}"
            );

            // shuffle: everything once.
            assert_eq!(
                values(&route(p, q, count, |s| s.shuffle()).await),
                all,
                "shuffle {p}->{q}"
            );

            // rescale: everything once, and each producer reaches only its local group.
            let r = route(p, q, count, |s| s.rescale()).await;
            assert_eq!(values(&r), all, "rescale {p}->{q}");
            for (subtask, value) in &r {
                let producer = (value % u64::from(p)) as u32;
                if p <= q {
                    // Each consumer has exactly one producer.
                    assert_eq!(
                        u64::from(*subtask) * u64::from(p) / u64::from(q),
                        u64::from(producer),
                        "rescale {p}->{q}: {value} from {producer} at {subtask}"
                    );
                } else {
                    assert_eq!(
                        u64::from(producer) * u64::from(q) / u64::from(p),
                        u64::from(*subtask),
                        "rescale {p}->{q}"
                    );
                }
            }

            // broadcast: every element at every subtask.
            let r = route(p, q, count, |s| s.broadcast()).await;
            let expected: Vec<(u32, u64)> = (0..q)
                .flat_map(|s| (0..count).map(move |v| (s, v)))
                .collect();
            assert_eq!(r, expected, "broadcast {p}->{q}");

            // global: everything at subtask 0.
            let r = route(p, q, count, |s| s.global()).await;
            assert_eq!(
                r,
                (0..count).map(|v| (0, v)).collect::<Vec<_>>(),
                "global {p}->{q}"
            );

            // custom: the user's function decides.
            let r = route(p, q, count, |s| {
                s.partition_custom(|k: &u64, n| (*k % u64::from(n)) as u32, |v| *v / 3)
            })
            .await;
            assert_eq!(values(&r), all, "custom {p}->{q}");
            for (subtask, value) in &r {
                assert_eq!(
                    u64::from(*subtask),
                    (value / 3) % u64::from(q),
                    "custom {p}->{q}"
                );
            }
        }
        // forward: subtask i to subtask i (equal parallelism).
        let r = route(p, p, count, |s| s.forward()).await;
        assert_eq!(values(&r), all, "forward {p}");
        for (subtask, value) in &r {
            assert_eq!(u64::from(*subtask), value % u64::from(p), "forward {p}");
        }
    }
}

#[tokio::test]
async fn chaining_does_not_change_results() {
    let expected: Vec<i64> = sorted(
        input()
            .into_iter()
            .map(|x| x * 2)
            .filter(|x| x % 3 != 0)
            .collect(),
    );
    for p in PARALLELISMS {
        for variant in 0..3 {
            let env = env(p);
            if variant == 1 {
                env.disable_operator_chaining();
            }
            let mapped = env.from_collection(input()).map(|x| x * 2);
            let mapped = if variant == 2 {
                mapped.start_new_chain()
            } else {
                mapped
            };
            let out = mapped
                .filter(|x| x % 3 != 0)
                .disable_chaining()
                .collect_sink();
            env.execute("chaining").await.unwrap();
            assert_eq!(
                sorted(out.take()),
                expected,
                "parallelism {p}, variant {variant}"
            );
        }
    }
}

/// One input record with 100,000 outputs (a line of 100,000 words in a word count), between
/// ordinary ones: its outputs fill many batches and run out of credit many times within one
/// input record, and both the plain outputs and the rolling counts per key are exactly the
/// sequential ones. At parallelism 1 the `key_by` edge has one channel, which takes a run in
/// bulk; at 2 and 4 records are routed one by one.
#[tokio::test]
async fn one_record_with_many_outputs() {
    const OUTPUTS: u64 = 100_000;
    let lines: Vec<u64> = vec![3, OUTPUTS, 5, 1];
    // The "words" of a line of `n` words: 1,009 distinct ones, irregularly spread.
    let words = |n: u64| {
        (0..n)
            .map(|i| ((i * 7_919) % 1_009, 1u64))
            .collect::<Vec<_>>()
    };

    let expected_words: Vec<(u64, u64)> = lines.iter().flat_map(|&n| words(n)).collect();
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    let expected_counts: Vec<(u64, u64)> = expected_words
        .iter()
        .map(|&(word, _)| {
            let count = counts.entry(word).or_default();
            *count += 1;
            (word, *count)
        })
        .collect();

    for p in PARALLELISMS {
        let env = env(p);
        let exploded = env.from_collection(lines.clone()).flat_map(words);
        let plain = exploded.clone().collect_sink();
        let rolling = exploded
            .key_by(|&(word, _): &(u64, u64)| word)
            .sum(|(_, count): &mut (u64, u64)| count)
            .collect_sink();
        env.execute("one record, many outputs").await.unwrap();

        // Not `assert_eq!`: a failure would print 100,000 pairs.
        let plain = sorted(plain.take());
        assert_eq!(plain.len(), expected_words.len(), "parallelism {p}");
        assert!(
            plain == sorted(expected_words.clone()),
            "plain outputs, parallelism {p}"
        );
        let rolling = rolling.take();
        assert_eq!(rolling.len(), expected_counts.len(), "parallelism {p}");
        assert!(
            per_key(rolling) == per_key(expected_counts.clone()),
            "rolling counts per key, parallelism {p}"
        );
    }
}
