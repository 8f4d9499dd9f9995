//! Joins against a plain sequential computation (nested loops over the inputs), at
//! parallelism 1, 2 and 4: inner, left, right and full joins on an equality key (a changelog,
//! compared after materializing it), with a residual condition, without an equality key,
//! over an updating input (a group aggregation's retractions), and an interval join.
//!
//! The bids are out of order by less than the watermark's delay, so no row is late for the
//! interval join; `people` holds ids without bids, bidders without a person and a repeated
//! person, so every kind of outer row and multiplicity shows up.

use std::collections::BTreeMap;
use std::path::Path;

use eichhorn::StreamEnv;
use eichhorn::state::splitmix64;
use eichhorn_sql::types::materialize;
use eichhorn_sql::{TableEnv, TableResult};

const ITEMS: [&str; 5] = ["apple", "pear", "plum", "fig", "kiwi"];
const NULL: &str = "<NULL>";

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

/// The nested-loop join of bids and people on `bidder = id` where `extra` holds, with the
/// outer rows `kind` keeps: `item,price,name` lines.
fn oracle(data: &[Bid], kind: &str, extra: impl Fn(&Bid, i64) -> bool) -> Vec<String> {
    let people = people();
    let mut out = Vec::new();
    for b in data {
        let matches: Vec<_> = people
            .iter()
            .filter(|(id, _)| *id == b.bidder && extra(b, *id))
            .collect();
        for (_, name) in &matches {
            out.push(format!("{},{},{name}", b.item, b.price));
        }
        if matches.is_empty() && (kind == "LEFT" || kind == "FULL") {
            out.push(format!("{},{},{NULL}", b.item, b.price));
        }
    }
    if kind == "RIGHT" || kind == "FULL" {
        for (id, name) in &people {
            if !data.iter().any(|b| b.bidder == *id && extra(b, *id)) {
                out.push(format!("{NULL},{NULL},{name}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_left_right_and_full_joins_on_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(200, 11);
    write_inputs(dir.path(), &data);
    for kind in ["INNER", "LEFT", "RIGHT", "FULL"] {
        check(
            dir.path(),
            &format!(
                "SELECT b.item, b.price, p.name FROM bids b {kind} JOIN people p ON b.bidder = p.id"
            ),
            "item,price,name",
            oracle(&data, kind, |_, _| true),
        )
        .await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_residual_condition_and_a_join_without_equality_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(150, 12);
    write_inputs(dir.path(), &data);
    // Equality key plus a condition over both sides, in a full join: a bid whose price is
    // too low is an unmatched outer row.
    check(
        dir.path(),
        "SELECT b.item, b.price, p.name FROM bids AS b FULL OUTER JOIN people AS p \
         ON p.id = b.bidder AND b.price > p.id * 3",
        "item,price,name",
        oracle(&data, "FULL", |b, id| b.price > id * 3),
    )
    .await;
    // No equality at all: one global key (all rows on one subtask), still correct.
    let mut expected = Vec::new();
    for b in &data {
        for (id, name) in people() {
            if b.bidder + 15 < id && b.price > 95 {
                expected.push(format!("{},{},{name}", b.item, b.price));
            }
        }
    }
    check(
        dir.path(),
        "SELECT item, price, name FROM bids JOIN people ON bidder + 15 < id AND price > 95",
        "item,price,name",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_join_over_an_updating_input_follows_its_retractions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(200, 13);
    write_inputs(dir.path(), &data);
    let mut totals: BTreeMap<i64, i64> = BTreeMap::new();
    for b in &data {
        *totals.entry(b.bidder).or_default() += b.price;
    }
    let expected = people()
        .iter()
        .map(|(id, name)| match totals.get(id) {
            Some(total) => format!("{name},{total}"),
            None => format!("{name},{NULL}"),
        })
        .collect();
    check(
        dir.path(),
        "SELECT p.name, s.total FROM people p LEFT JOIN \
         (SELECT bidder, SUM(price) AS total FROM bids GROUP BY bidder) s ON p.id = s.bidder",
        "name,total",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_interval_join_pairs_rows_within_the_time_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(300, 14);
    write_inputs(dir.path(), &data);
    let mut expected = Vec::new();
    for a in &data {
        for b in &data {
            if a.item == b.item && b.ms >= a.ms - 400 && b.ms <= a.ms + 250 && a.price < b.price {
                expected.push(format!(
                    "{},{},{},{}",
                    a.item,
                    a.price,
                    b.price,
                    b.ms - a.ms
                ));
            }
        }
    }
    check(
        dir.path(),
        "SELECT a.item, a.price, b.price AS later_price, b.ms - a.ms AS delta \
         FROM bids a JOIN bids b ON a.item = b.item \
         AND b.ts BETWEEN a.ts - INTERVAL '400' MILLISECOND AND a.ts + INTERVAL '250' MILLISECOND \
         AND a.price < b.price",
        "item,price,later_price,delta",
        expected.clone(),
    )
    .await;
    // The same bounds written from the other side.
    check(
        dir.path(),
        "SELECT a.item, a.price, b.price AS later_price, b.ms - a.ms AS delta \
         FROM bids a JOIN bids b ON b.item = a.item \
         AND a.ts BETWEEN b.ts - INTERVAL '250' MILLISECOND AND b.ts + INTERVAL '400' MILLISECOND \
         AND a.price < b.price",
        "item,price,later_price,delta",
        expected,
    )
    .await;
}

/// `SET 'table.exec.state.ttl'` bounds a regular join's state in processing time: a row
/// leaves the state when it was not written for that long, so it no longer joins with rows
/// that arrive later. The rows come paced, 100 ms of (virtual, paused) time apart.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_state_ttl_expires_rows_of_a_regular_join() {
    use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
    use eichhorn_sql::{Column, DataType, Schema, Value};

    const ROWS: i64 = 40;
    async fn pairs(ttl: Option<&str>) -> Vec<(i64, i64)> {
        let env = StreamEnv::new();
        let rows = env
            .add_source(
                RateLimitedSource::new(GeneratorSource::new(Some(ROWS as u64), |g| g), 10),
                "paced",
            )
            .set_parallelism(1)
            .map(|g: u64| vec![Value::BigInt(0), Value::BigInt(g as i64)])
            .set_parallelism(1);
        let mut tenv = TableEnv::new(&env);
        tenv.from_data_stream(
            "events",
            rows,
            Schema::new(vec![
                Column::new("k", DataType::BigInt),
                Column::new("v", DataType::BigInt),
            ]),
        )
        .expect("register");
        if let Some(ttl) = ttl {
            tenv.execute_sql(&format!("SET 'table.exec.state.ttl' = '{ttl}'"))
                .await
                .expect("set");
        }
        let result = tenv
            .execute_sql(
                "SELECT a.v, b.v AS w FROM events a JOIN events b ON a.k = b.k AND a.v < b.v",
            )
            .await
            .expect("query");
        let TableResult::Rows { changes, .. } = result else {
            panic!("not rows");
        };
        let mut pairs: Vec<(i64, i64)> = materialize(changes)
            .expect("consistent")
            .into_keys()
            .map(|row| {
                let v = |i: usize| row[i].as_i64().expect("BIGINT");
                (v(0), v(1))
            })
            .collect();
        pairs.sort_unstable();
        pairs
    }
    // Without a TTL every earlier row is still there when a later one arrives.
    assert_eq!(pairs(None).await.len() as i64, ROWS * (ROWS - 1) / 2);
    // With 1 s, a row joins the rows of roughly the next second only.
    let bounded = pairs(Some("1 s")).await;
    for i in 0..ROWS {
        for j in i + 1..(i + 6).min(ROWS) {
            assert!(
                bounded.contains(&(i, j)),
                "({i}, {j}) within the TTL is missing"
            );
        }
    }
    assert!(
        bounded.iter().all(|(i, j)| j - i < 15),
        "a pair beyond the TTL: {bounded:?}"
    );
    // 0 means no expiry, as in Flink.
    assert_eq!(
        pairs(Some("0 ms")).await.len() as i64,
        ROWS * (ROWS - 1) / 2
    );
}
