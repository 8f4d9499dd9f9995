//! Each SQL feature against a plain sequential computation of the same result, at parallelism
//! 1, 2 and 4: projections and filters, group aggregation with HAVING (a changelog, compared
//! after materializing it), DISTINCT, UNION ALL, and window aggregation over TUMBLE, HOP,
//! CUMULATE and SESSION.
//!
//! The input is a seeded CSV of bids whose event times are out of order by less than the
//! watermark's delay, so no row is late and every window holds exactly its rows.

use std::collections::BTreeMap;
use std::path::Path;

use eichhorn::StreamEnv;
use eichhorn::state::splitmix64;
use eichhorn_sql::types::{format_double, format_timestamp, materialize};
use eichhorn_sql::{TableEnv, TableResult};

const ITEMS: [&str; 7] = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date"];

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
                item: ITEMS[(r % 7) as usize],
                price: ((r >> 8) % 100) as i64 + 1,
                bidder: ((r >> 16) % 20) as i64,
                // Mostly rising, out of order by less than the watermark delay (1 s); a
                // quiet stretch now and then, so sessions end.
                ms: i as i64 * 170 + ((r >> 24) % 900) as i64 + (i as i64 / 40) * 4_000,
            }
        })
        .collect()
}

fn write_csv(path: &Path, bids: &[Bid]) {
    let text: String = bids
        .iter()
        .map(|b| format!("{},{},{},{}\n", b.item, b.price, b.bidder, b.ms))
        .collect();
    std::fs::write(path, text).expect("write csv");
}

fn ddl(path: &Path) -> String {
    format!(
        "CREATE TABLE bids (
           item STRING,
           price BIGINT,
           bidder BIGINT,
           ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        path.display()
    )
}

/// Runs `query` at `parallelism` and returns the final result as sorted lines, with the
/// header first.
async fn run(path: &Path, query: &str, parallelism: u32) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut tenv = TableEnv::new(&env);
    tenv.execute_sql(&ddl(path)).await.expect("create table");
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
    let mut lines = vec![schema.names().join(",")];
    for (row, count) in table {
        let line = row
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        lines.extend(std::iter::repeat_n(line, count as usize));
    }
    lines[1..].sort();
    lines
}

/// Checks `query` at parallelism 1, 2 and 4 against `expected` (header, then rows in any
/// order).
async fn check(path: &Path, query: &str, header: &str, mut expected: Vec<String>) {
    expected.sort();
    assert!(!expected.is_empty(), "{query}: the oracle expects no rows");
    for parallelism in [1, 2, 4] {
        let lines = run(path, query, parallelism).await;
        assert_eq!(lines[0], header, "{query} at P={parallelism}");
        assert_eq!(
            lines[1..],
            expected[..],
            "{query} at P={parallelism}: result differs from the oracle"
        );
    }
}

fn ts(ms: i64) -> String {
    format_timestamp(ms)
}

/// Aggregates of a group of prices: count, sum, min, max, avg (integer, as Flink's AVG of
/// BIGINT), distinct bidders.
fn aggregates(group: &[&Bid]) -> String {
    let prices: Vec<i64> = group.iter().map(|b| b.price).collect();
    let sum: i64 = prices.iter().sum();
    let distinct: std::collections::BTreeSet<i64> = group.iter().map(|b| b.bidder).collect();
    format!(
        "{},{sum},{},{},{},{}",
        prices.len(),
        prices.iter().min().expect("non-empty"),
        prices.iter().max().expect("non-empty"),
        sum / prices.len() as i64,
        distinct.len()
    )
}

const AGGS: &str = "COUNT(*) AS n, SUM(price) AS total, MIN(price) AS low, MAX(price) AS high, \
                    AVG(price) AS mean, COUNT(DISTINCT bidder) AS bidders";
const AGG_HEADER: &str = "n,total,low,high,mean,bidders";

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn projection_filter_case_and_functions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    let data = bids(300, 1);
    write_csv(&path, &data);
    let expected = data
        .iter()
        .filter(|b| b.price % 3 != 0 && b.item != "fig")
        .map(|b| {
            let level = if b.price > 50 { "high" } else { "low" };
            format!(
                "{},{},{},{level},{},{}",
                b.item.to_uppercase(),
                b.price * 2 + 1,
                format_double(b.price as f64 / 4.0),
                ts(b.ms),
                b.item.len()
            )
        })
        .collect();
    check(
        &path,
        "SELECT UPPER(item) AS item, price * 2 + 1 AS p, CAST(price AS DOUBLE) / 4 AS q, \
         CASE WHEN price > 50 THEN 'high' ELSE 'low' END AS lvl, ts, CHAR_LENGTH(item) AS len \
         FROM bids WHERE price % 3 <> 0 AND NOT item = 'fig'",
        "item,p,q,lvl,ts,len",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn group_aggregation_with_having() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    let data = bids(400, 2);
    write_csv(&path, &data);
    let mut groups: BTreeMap<(&str, i64), Vec<&Bid>> = BTreeMap::new();
    for b in &data {
        groups.entry((b.item, b.price % 4)).or_default().push(b);
    }
    let expected = groups
        .iter()
        .filter(|(_, g)| g.len() > 10)
        .map(|((item, bucket), g)| format!("{item},{bucket},{}", aggregates(g)))
        .collect();
    check(
        &path,
        &format!(
            "SELECT item, price % 4 AS bucket, {AGGS} FROM bids \
             GROUP BY item, price % 4 HAVING COUNT(*) > 10"
        ),
        &format!("item,bucket,{AGG_HEADER}"),
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn distinct_and_union_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    let data = bids(200, 3);
    write_csv(&path, &data);
    let pairs: std::collections::BTreeSet<(&str, i64)> =
        data.iter().map(|b| (b.item, b.bidder % 3)).collect();
    let expected = pairs.iter().map(|(i, b)| format!("{i},{b}")).collect();
    check(
        &path,
        "SELECT DISTINCT item, bidder % 3 AS b FROM bids",
        "item,b",
        expected,
    )
    .await;
    let mut expected = Vec::new();
    for b in &data {
        if b.price > 90 {
            expected.push(format!("{},{}", b.item, b.price));
        }
        if b.price < 5 {
            expected.push(format!("{},{}", b.item, -b.price));
        }
    }
    check(
        &path,
        "SELECT item, price FROM bids WHERE price > 90 \
         UNION ALL SELECT item, -price AS price FROM bids WHERE price < 5",
        "item,price",
        expected,
    )
    .await;
}

/// The oracle for a window aggregation: each bid goes to `windows(ms)`.
fn windowed(data: &[Bid], windows: impl Fn(i64) -> Vec<(i64, i64)>) -> Vec<String> {
    let mut groups: BTreeMap<(i64, i64, &str), Vec<&Bid>> = BTreeMap::new();
    for b in data {
        for (start, end) in windows(b.ms) {
            groups.entry((start, end, b.item)).or_default().push(b);
        }
    }
    groups
        .iter()
        .map(|((start, end, item), g)| {
            format!(
                "{},{},{},{item},{}",
                ts(*start),
                ts(*end),
                ts(end - 1),
                aggregates(g)
            )
        })
        .collect()
}

async fn check_window(path: &Path, tvf: &str, expected: Vec<String>) {
    check(
        path,
        &format!(
            "SELECT window_start, window_end, window_time, item, {AGGS} \
             FROM TABLE({tvf}) GROUP BY window_start, window_end, window_time, item"
        ),
        &format!("window_start,window_end,window_time,item,{AGG_HEADER}"),
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tumble_hop_and_cumulate_window_aggregation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    let data = bids(400, 4);
    write_csv(&path, &data);
    let tumble = |ms: i64| {
        let start = ms - ms.rem_euclid(5_000);
        vec![(start, start + 5_000)]
    };
    check_window(
        &path,
        "TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND)",
        windowed(&data, tumble),
    )
    .await;
    let hop = |ms: i64| {
        let last = ms - ms.rem_euclid(2_000);
        (0..3)
            .map(|k| (last - k * 2_000, last - k * 2_000 + 6_000))
            .collect()
    };
    check_window(
        &path,
        "HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND)",
        windowed(&data, hop),
    )
    .await;
    let cumulate = |ms: i64| {
        let start = ms - ms.rem_euclid(9_000);
        (1..=3)
            .map(|k| (start, start + k * 3_000))
            .filter(|(_, end)| *end > ms)
            .collect()
    };
    check_window(
        &path,
        "CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '9' SECOND)",
        windowed(&data, cumulate),
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn session_window_aggregation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    let data = bids(400, 5);
    write_csv(&path, &data);
    let gap = 2_500;
    // Sessions per item: sorted times, a new session where the next time is past the end.
    let mut per_item: BTreeMap<&str, Vec<&Bid>> = BTreeMap::new();
    for b in &data {
        per_item.entry(b.item).or_default().push(b);
    }
    let mut expected = Vec::new();
    for (item, mut group) in per_item {
        group.sort_by_key(|b| b.ms);
        let mut session: Vec<&Bid> = Vec::new();
        let mut flush = |session: &mut Vec<&Bid>| {
            if let (Some(first), Some(last)) = (session.first(), session.last()) {
                let (start, end) = (first.ms, last.ms + gap);
                expected.push(format!(
                    "{},{},{},{item},{}",
                    ts(start),
                    ts(end),
                    ts(end - 1),
                    aggregates(session)
                ));
            }
            session.clear();
        };
        for b in group {
            if session.last().is_some_and(|l| b.ms > l.ms + gap) {
                flush(&mut session);
            }
            session.push(b);
        }
        flush(&mut session);
    }
    assert!(expected.len() > 14, "sessions split: {}", expected.len());
    check_window(
        &path,
        "SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '2.5' SECOND)",
        expected,
    )
    .await;
}

/// Runs `query` at `parallelism` and returns its changes in the order they came.
async fn run_in_order(path: &Path, query: &str, parallelism: u32) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut tenv = TableEnv::new(&env);
    tenv.execute_sql(&ddl(path)).await.expect("create table");
    let result = tenv
        .execute_sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query} at P={parallelism}: {e}"));
    let TableResult::Rows { changes, .. } = result else {
        panic!("{query}: not rows");
    };
    changes.iter().map(ToString::to_string).collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn order_by_and_limit_sort_a_bounded_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    let data = bids(300, 41);
    write_csv(&path, &data);
    // Keys first, then the whole row (item, price, bidder) breaks ties.
    let mut rows: Vec<_> = data.iter().map(|b| (b.item, b.price, b.bidder)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)).then(a.cmp(b)));
    let expected: Vec<String> = rows
        .iter()
        .skip(3)
        .take(15)
        .map(|(item, price, bidder)| format!("+I,{item},{price},{bidder}"))
        .collect();
    let query = "SELECT item, price, bidder FROM bids ORDER BY price DESC, item LIMIT 15 OFFSET 3";
    for parallelism in [1, 2, 4] {
        assert_eq!(
            run_in_order(&path, query, parallelism).await,
            expected,
            "P={parallelism}"
        );
    }
    // An updating input (a GROUP BY changelog) is sorted as its final table.
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for b in &data {
        *counts.entry(b.item).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let expected: Vec<String> = counts
        .iter()
        .take(3)
        .map(|(item, n)| format!("+I,{item},{n}"))
        .collect();
    let query = "SELECT item, COUNT(*) AS n FROM bids GROUP BY item ORDER BY n DESC, item LIMIT 3";
    for parallelism in [1, 2, 4] {
        assert_eq!(
            run_in_order(&path, query, parallelism).await,
            expected,
            "P={parallelism}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn order_by_event_time_sorts_a_stream_and_other_orders_are_refused() {
    use eichhorn::time::WatermarkStrategy;
    use eichhorn_sql::{Column, DataType, Row, Schema, Value};

    let data = bids(200, 42);
    let mut expected: Vec<(i64, i64, String)> = data
        .iter()
        .map(|b| (b.ms, b.price, b.item.to_string()))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let expected: Vec<String> = expected
        .iter()
        .map(|(ms, price, item)| format!("+I,{},{price},{item}", format_timestamp(*ms)))
        .collect();
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let rows = env
            .from_collection(
                data.iter()
                    .map(|b| {
                        vec![
                            Value::String(b.item.to_string()),
                            Value::BigInt(b.price),
                            Value::TimestampLtz(b.ms),
                        ]
                    })
                    .collect::<Vec<Row>>(),
            )
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness_every_event(1_000)
                    .with_timestamp_assigner(|r: &Row, _| r[2].as_i64().unwrap_or(i64::MIN)),
            );
        let mut tenv = TableEnv::new(&env);
        tenv.from_data_stream(
            "events",
            rows,
            Schema::new(vec![
                Column::new("item", DataType::String),
                Column::new("price", DataType::BigInt),
                Column {
                    name: "ts".into(),
                    data_type: DataType::TimestampLtz,
                    rowtime: true,
                },
            ]),
        )
        .expect("register");
        for (query, refused) in [
            (
                "SELECT item FROM events ORDER BY item",
                "event-time attribute",
            ),
            (
                "SELECT ts FROM events ORDER BY ts DESC",
                "event-time attribute",
            ),
            (
                "SELECT ts FROM events ORDER BY ts LIMIT 3",
                "LIMIT / OFFSET",
            ),
        ] {
            let error = tenv.sql_query(query).expect_err(query).to_string();
            assert!(error.contains(refused), "{query}: {error}");
        }
        let result = tenv
            .execute_sql("SELECT ts, price, item FROM events ORDER BY ts, price DESC")
            .await
            .expect("query");
        let TableResult::Rows { changes, .. } = result else {
            panic!("not rows");
        };
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(lines, expected, "P={parallelism}");
    }
}
