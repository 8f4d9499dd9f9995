//! Top-N, deduplication and `OVER` aggregations against a plain sequential computation, at
//! parallelism 1, 2 and 4:
//! the Top-3 bids per item by price, the first and the last bid per bidder in event time
//! (deduplication), and the Top-3 bidders by their total, over a group aggregation's
//! retractions. Ties are broken by the whole row, so the result is the same at every
//! parallelism.

use std::collections::BTreeMap;
use std::path::Path;

use eichhorn::StreamEnv;
use eichhorn::state::splitmix64;
use eichhorn_sql::types::materialize;
use eichhorn_sql::{TableEnv, TableResult};

const ITEMS: [&str; 5] = ["apple", "pear", "plum", "fig", "kiwi"];

/// A bid: item, price, bidder, event time (ms).
#[derive(Debug, Clone)]
struct Bid {
    item: &'static str,
    price: i64,
    bidder: i64,
    ms: i64,
}

fn bids(count: u64, seed: u64) -> Vec<Bid> {
    (0..count)
        .map(|i| {
            let r = splitmix64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            Bid {
                item: ITEMS[(r % 5) as usize],
                price: ((r >> 8) % 100) as i64 + 1,
                bidder: ((r >> 16) % 20) as i64,
                // Rising, out of order by less than the watermark delay (1 s).
                ms: i as i64 * 150 + ((r >> 24) % 900) as i64,
            }
        })
        .collect()
}

/// People 5..25 (bidders 0..5 have none, people 20..25 never bid); 7 is there twice.
fn people() -> Vec<(i64, String)> {
    let mut people: Vec<(i64, String)> = (5..25).map(|id| (id, format!("p{id}"))).collect();
    people.push((7, "p7".to_string()));
    people
}

fn write_inputs(dir: &Path, bids: &[Bid]) {
    let text: String = bids
        .iter()
        .map(|b| format!("{},{},{},{}\n", b.item, b.price, b.bidder, b.ms))
        .collect();
    std::fs::write(dir.join("bids.csv"), text).expect("write bids");
    let text: String = people()
        .iter()
        .map(|(id, name)| format!("{id},{name}\n"))
        .collect();
    std::fs::write(dir.join("people.csv"), text).expect("write people");
}

fn ddl(dir: &Path) -> String {
    format!(
        "CREATE TABLE bids (
           item STRING, price BIGINT, bidder BIGINT, ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}');
         CREATE TABLE people (id BIGINT, name STRING)
           WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        dir.join("bids.csv").display(),
        dir.join("people.csv").display()
    )
}

/// Runs `query` at `parallelism`: the header and the materialized rows, sorted.
async fn run(dir: &Path, query: &str, parallelism: u32) -> (String, Vec<String>) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut tenv = TableEnv::new(&env);
    tenv.execute_script(&ddl(dir), |_| {})
        .await
        .expect("create tables");
    let result = tenv
        .execute_sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query} at P={parallelism}: {e}"));
    let TableResult::Rows {
        schema, changes, ..
    } = result
    else {
        panic!("{query}: not rows");
    };
    let table = materialize(changes).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut lines = Vec::new();
    for (row, count) in table {
        let line = row
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        lines.extend(std::iter::repeat_n(line, count as usize));
    }
    lines.sort();
    (schema.names().join(","), lines)
}

async fn check(dir: &Path, query: &str, header: &str, mut expected: Vec<String>) {
    expected.sort();
    assert!(!expected.is_empty(), "{query}: the oracle expects no rows");
    for parallelism in [1, 2, 4] {
        let (columns, lines) = run(dir, query, parallelism).await;
        assert_eq!(columns, header, "{query} at P={parallelism}");
        assert_eq!(
            lines, expected,
            "{query} at P={parallelism}: result differs from the oracle"
        );
    }
}

/// Ranks `rows` by `key` and keeps the first `n` of each partition, with the rank.
fn top_n<P: Ord, K: Ord>(
    data: &[Bid],
    n: usize,
    partition: impl Fn(&Bid) -> P,
    key: impl Fn(&Bid) -> K,
    line: impl Fn(&Bid, usize) -> String,
) -> Vec<String> {
    let mut groups: BTreeMap<P, Vec<&Bid>> = BTreeMap::new();
    for b in data {
        groups.entry(partition(b)).or_default().push(b);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.sort_by_key(|b| key(b));
        for (i, b) in group.iter().take(n).enumerate() {
            out.push(line(b, i + 1));
        }
    }
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn top_n_per_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(300, 21);
    write_inputs(dir.path(), &data);
    // Ties on price go by the whole inner row: item, price, bidder, ms ascending.
    let expected = top_n(
        &data,
        3,
        |b| b.item,
        |b| (std::cmp::Reverse(b.price), b.bidder, b.ms),
        |b, rn| format!("{},{},{},{rn}", b.item, b.price, b.bidder),
    );
    check(
        dir.path(),
        "SELECT item, price, bidder, rn FROM ( \
           SELECT item, price, bidder, ms, \
             ROW_NUMBER() OVER (PARTITION BY item ORDER BY price DESC) AS rn \
           FROM bids) \
         WHERE rn <= 3",
        "item,price,bidder,rn",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deduplication_keeps_the_first_or_the_last_row_in_event_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(300, 22);
    write_inputs(dir.path(), &data);
    let first = top_n(
        &data,
        1,
        |b| b.bidder,
        |b| (b.ms, b.item, b.price),
        |b, _| format!("{},{},{}", b.bidder, b.item, b.price),
    );
    check(
        dir.path(),
        "SELECT bidder, item, price FROM ( \
           SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY ts ASC) AS rn FROM bids) \
         WHERE rn = 1",
        "bidder,item,price",
        first,
    )
    .await;
    let last = top_n(
        &data,
        1,
        |b| b.bidder,
        |b| (std::cmp::Reverse(b.ms), b.item, b.price),
        |b, _| format!("{},{},{}", b.bidder, b.item, b.price),
    );
    check(
        dir.path(),
        "SELECT bidder, item, price FROM ( \
           SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY ts DESC) AS rn FROM bids) \
         WHERE rn < 2",
        "bidder,item,price",
        last,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn top_n_over_an_updating_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(300, 23);
    write_inputs(dir.path(), &data);
    let mut totals: BTreeMap<i64, i64> = BTreeMap::new();
    for b in &data {
        *totals.entry(b.bidder).or_default() += b.price;
    }
    let mut ranked: Vec<(i64, i64)> = totals.into_iter().collect();
    ranked.sort_by_key(|(bidder, total)| (std::cmp::Reverse(*total), *bidder));
    let expected = ranked
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, (bidder, total))| format!("{},{bidder},{total}", i + 1))
        .collect();
    check(
        dir.path(),
        "SELECT * FROM ( \
           SELECT ROW_NUMBER() OVER (ORDER BY total DESC) AS rn, bidder, total FROM ( \
             SELECT bidder, SUM(price) AS total FROM bids GROUP BY bidder)) \
         WHERE rn <= 3",
        "rn,bidder,total",
        expected,
    )
    .await;
}

/// `OVER` aggregations in event time: each bid with the sum and count of its item's last
/// three bids (`ROWS`) and of its item's bids in the last two seconds (`RANGE`), whatever
/// order the bids came in (they are out of order by less than the watermark delay).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn over_aggregations_with_rows_and_range_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(300, 24);
    write_inputs(dir.path(), &data);
    // Per item, in event-time order (rows of one time by their contents).
    let mut by_item: BTreeMap<&str, Vec<&Bid>> = BTreeMap::new();
    for b in &data {
        by_item.entry(b.item).or_default().push(b);
    }
    let mut rows_expected = Vec::new();
    let mut range_expected = Vec::new();
    for group in by_item.values_mut() {
        group.sort_by_key(|b| (b.ms, b.price, b.bidder));
        for (i, b) in group.iter().enumerate() {
            let frame = &group[i.saturating_sub(2)..=i];
            let sum: i64 = frame.iter().map(|f| f.price).sum();
            rows_expected.push(format!(
                "{},{},{},{sum},{}",
                b.item,
                b.ms,
                b.price,
                frame.len()
            ));
            let range: Vec<_> = group
                .iter()
                .filter(|f| f.ms >= b.ms - 2_000 && f.ms <= b.ms)
                .collect();
            let sum: i64 = range.iter().map(|f| f.price).sum();
            let max = range.iter().map(|f| f.price).max().expect("the row itself");
            range_expected.push(format!("{},{},{},{sum},{max}", b.item, b.ms, b.price));
        }
    }
    check(
        dir.path(),
        "SELECT item, ms, price, \
           SUM(price) OVER (PARTITION BY item ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s, \
           COUNT(*) OVER (PARTITION BY item ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n \
         FROM bids",
        "item,ms,price,s,n",
        rows_expected,
    )
    .await;
    check(
        dir.path(),
        "SELECT item, ms, price, \
           SUM(price) OVER (PARTITION BY item ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS s, \
           MAX(price) OVER (PARTITION BY item ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS top \
         FROM bids",
        "item,ms,price,s,top",
        range_expected,
    )
    .await;
}
