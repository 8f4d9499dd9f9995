//! Joins against a plain sequential computation (nested loops over the inputs), at
//! parallelism 1, 2 and 4: inner, left, right and full joins on an equality key (a changelog,
//! compared after materializing it), with a residual condition, without an equality key,
//! over an updating input (a group aggregation's retractions), interval joins (inner and
//! outer), event-time temporal joins against a versioned table, and window joins.
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
    run_with(&ddl(dir), query, parallelism).await
}

/// Runs `query` after the statements of `ddl`, at `parallelism`: the header and the
/// materialized rows, sorted.
async fn run_with(ddl: &str, query: &str, parallelism: u32) -> (String, Vec<String>) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut tenv = TableEnv::new(&env);
    tenv.execute_script(ddl, |_| {})
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

/// The `EXPLAIN` of `query` after `ddl`.
async fn explain(ddl: &str, query: &str) -> String {
    let mut tenv = TableEnv::new(&StreamEnv::new());
    tenv.execute_script(ddl, |_| {})
        .await
        .expect("create tables");
    match tenv.execute_sql(&format!("EXPLAIN {query}")).await {
        Ok(TableResult::Text(text)) => text,
        other => panic!("EXPLAIN {query}: {other:?}"),
    }
}

/// Checks `query` after `ddl` against `expected` at parallelism 1, 2 and 4, and that its plan
/// has `operator` (a regular join's changelog can materialize to the same final table).
async fn check_with(
    ddl: &str,
    query: &str,
    operator: &str,
    header: &str,
    mut expected: Vec<String>,
) {
    let plan = explain(ddl, query).await;
    assert!(plan.contains(operator), "{query}: no {operator} in\n{plan}");
    expected.sort();
    assert!(!expected.is_empty(), "{query}: the oracle expects no rows");
    for parallelism in [1, 2, 4] {
        let (columns, lines) = run_with(ddl, query, parallelism).await;
        assert_eq!(columns, header, "{query} at P={parallelism}");
        assert_eq!(
            lines, expected,
            "{query} at P={parallelism}: result differs from the oracle"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn outer_interval_joins_pad_rows_without_partners_in_their_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(250, 15);
    write_inputs(dir.path(), &data);
    // right ∈ [left - 300 ms, left + 200 ms], and a residual condition over both sides.
    let pairs = |a: &Bid, b: &Bid| {
        a.item == b.item && b.ms >= a.ms - 300 && b.ms <= a.ms + 200 && a.price + 20 < b.price
    };
    for kind in ["LEFT", "RIGHT", "FULL"] {
        let mut expected = Vec::new();
        for a in &data {
            let mut any = false;
            for b in data.iter().filter(|b| pairs(a, b)) {
                any = true;
                expected.push(format!("{},{},{},{}", a.item, a.price, b.item, b.price));
            }
            if !any && kind != "RIGHT" {
                expected.push(format!("{},{},{NULL},{NULL}", a.item, a.price));
            }
        }
        if kind != "LEFT" {
            for b in &data {
                if !data.iter().any(|a| pairs(a, b)) {
                    expected.push(format!("{NULL},{NULL},{},{}", b.item, b.price));
                }
            }
        }
        check(
            dir.path(),
            &format!(
                "SELECT a.item, a.price, b.item AS b_item, b.price AS b_price \
                 FROM bids a {kind} JOIN bids b ON a.item = b.item \
                 AND b.ts BETWEEN a.ts - INTERVAL '300' MILLISECOND AND a.ts + INTERVAL '200' MILLISECOND \
                 AND a.price + 20 < b.price"
            ),
            "item,price,b_item,b_price",
            expected,
        )
        .await;
        let plan = explain(
            &ddl(dir.path()),
            &format!(
                "SELECT a.item FROM bids a {kind} JOIN bids b ON a.item = b.item \
                 AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND"
            ),
        )
        .await;
        assert!(
            plan.contains(&format!("IntervalJoin(joinType=[{kind}]")),
            "{plan}"
        );
    }
}

/// An order: id, currency, amount, event time (ms).
type Order = (i64, &'static str, i64, i64);
/// A version of a rate: currency, rate, event time (ms).
type Rate = (&'static str, i64, i64);

const CURRENCIES: [&str; 4] = ["EUR", "USD", "JPY", "CHF"];

/// Orders rising in time, out of order by less than the watermark delay (1 s); rates with
/// versions from 500 ms on (earlier orders find none), CHF never, and repeated times.
fn orders_and_rates(seed: u64) -> (Vec<Order>, Vec<Rate>) {
    let orders = (0..240u64)
        .map(|i| {
            let r = splitmix64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            (
                i as i64,
                CURRENCIES[(r % 4) as usize],
                ((r >> 8) % 50) as i64 + 1,
                // Multiples of 20 ms, as the versions' times: some orders fall exactly on
                // a version (which is valid at its own time).
                (i as i64 * 40 + ((r >> 16) % 700) as i64) / 20 * 20,
            )
        })
        .collect();
    let rates = (0..60u64)
        .map(|i| {
            let r = splitmix64(seed.wrapping_add(7) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            (
                CURRENCIES[(r % 3) as usize],
                ((r >> 8) % 40) as i64 + 1,
                // Every 160 ms, out of order by less than 1 s; some share a time.
                500 + (i as i64 / 2) * 320 + ((r >> 16) % 600) as i64 / 100 * 100,
            )
        })
        .collect();
    (orders, rates)
}

fn temporal_ddl(dir: &Path, orders: &[Order], rates: &[Rate]) -> String {
    let text: String = orders
        .iter()
        .map(|(id, c, amount, ms)| format!("{id},{c},{amount},{ms}\n"))
        .collect();
    std::fs::write(dir.join("orders.csv"), text).expect("write orders");
    let text: String = rates
        .iter()
        .map(|(c, rate, ms)| format!("{c},{rate},{ms}\n"))
        .collect();
    std::fs::write(dir.join("rates.csv"), text).expect("write rates");
    format!(
        "CREATE TABLE orders (
           id BIGINT, currency STRING, amount BIGINT, ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}');
         CREATE TABLE rates (
           currency STRING, rate BIGINT, ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           PRIMARY KEY (currency) NOT ENFORCED,
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        dir.join("orders.csv").display(),
        dir.join("rates.csv").display()
    )
}

/// The version of `currency` valid at `ms`: the latest at or before it; of several at one
/// time, the greatest rate (the planner's tie rule: the greater row).
fn version_at(rates: &[Rate], currency: &str, ms: i64) -> Option<Rate> {
    rates
        .iter()
        .filter(|(c, _, t)| *c == currency && *t <= ms)
        .max_by_key(|(_, rate, t)| (*t, *rate))
        .copied()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_temporal_join_takes_the_version_valid_at_each_rows_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (orders, rates) = orders_and_rates(21);
    let ddl = temporal_ddl(dir.path(), &orders, &rates);
    let on_a_version = orders
        .iter()
        .filter(|(_, c, _, ms)| rates.iter().any(|(rc, _, t)| rc == c && t == ms))
        .count();
    assert!(
        on_a_version > 3,
        "{on_a_version} orders at a version's time"
    );
    for kind in ["", "LEFT"] {
        let mut expected = Vec::new();
        for (id, currency, amount, ms) in &orders {
            match version_at(&rates, currency, *ms) {
                Some((_, rate, at)) => {
                    expected.push(format!("{id},{currency},{},{at}", amount * rate));
                }
                None if kind == "LEFT" => expected.push(format!("{id},{currency},{NULL},{NULL}")),
                None => {}
            }
        }
        check_with(
            &ddl,
            &format!(
                "SELECT o.id, o.currency, o.amount * r.rate AS price, r.ms AS version \
                 FROM orders AS o {kind} JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r \
                 ON o.currency = r.currency"
            ),
            "TemporalJoin(",
            "id,currency,price,version",
            expected,
        )
        .await;
    }
    // A residual condition is checked on the valid version only: a LEFT join pads the
    // rows whose version fails it (an older version that would pass does not count).
    let mut expected = Vec::new();
    for (id, currency, amount, ms) in &orders {
        match version_at(&rates, currency, *ms) {
            Some((_, rate, _)) if rate < *amount => expected.push(format!("{id},{rate}")),
            _ => expected.push(format!("{id},{NULL}")),
        }
    }
    check_with(
        &ddl,
        "SELECT o.id, r.rate FROM orders o LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r \
         ON r.currency = o.currency AND r.rate < o.amount",
        "TemporalJoin(joinType=[LEFT]",
        "id,rate",
        expected,
    )
    .await;
}

/// Asks: the same shape as bids, another seed.
fn window_ddl(dir: &Path, bids: &[Bid], asks: &[Bid]) -> String {
    for (name, rows) in [("bids.csv", bids), ("asks.csv", asks)] {
        let text: String = rows
            .iter()
            .map(|b| format!("{},{},{},{}\n", b.item, b.price, b.bidder, b.ms))
            .collect();
        std::fs::write(dir.join(name), text).expect("write");
    }
    let table = |name: &str| {
        format!(
            "CREATE TABLE {name} (
               item STRING, price BIGINT, bidder BIGINT, ms BIGINT,
               ts AS TO_TIMESTAMP_LTZ(ms, 3),
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
             ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}');",
            dir.join(format!("{name}.csv")).display()
        )
    };
    format!("{}\n{}", table("bids"), table("asks"))
}

/// The window join oracle: rows of the same item and window (`windows` gives a row's
/// window starts) where `extra` holds, the unmatched rows of outer sides padded.
fn window_oracle(
    kind: &str,
    bids: &[Bid],
    asks: &[Bid],
    windows: impl Fn(i64) -> Vec<i64>,
    extra: impl Fn(&Bid, &Bid) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let row = |b: Option<&Bid>| match b {
        Some(b) => format!("{},{}", b.item, b.price),
        None => format!("{NULL},{NULL}"),
    };
    for b in bids {
        for w in windows(b.ms) {
            let partners: Vec<_> = asks
                .iter()
                .filter(|a| a.item == b.item && windows(a.ms).contains(&w) && extra(b, a))
                .collect();
            for a in &partners {
                out.push(format!("{},{}", row(Some(b)), row(Some(a))));
            }
            if partners.is_empty() && (kind == "LEFT" || kind == "FULL") {
                out.push(format!("{},{}", row(Some(b)), row(None)));
            }
        }
    }
    if kind == "RIGHT" || kind == "FULL" {
        for a in asks {
            for w in windows(a.ms) {
                let matched = bids
                    .iter()
                    .any(|b| b.item == a.item && windows(b.ms).contains(&w) && extra(b, a));
                if !matched {
                    out.push(format!("{},{}", row(None), row(Some(a))));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn window_joins_join_rows_of_the_same_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bid_rows, ask_rows) = (bids(120, 31), bids(120, 32));
    let ddl = window_ddl(dir.path(), &bid_rows, &ask_rows);
    let tumble = |ms: i64| vec![ms.div_euclid(1000) * 1000];
    for kind in ["INNER", "LEFT", "RIGHT", "FULL"] {
        check_with(
            &ddl,
            &format!(
                "SELECT l.item, l.price, r.item AS ask_item, r.price AS ask \
                 FROM (SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))) l \
                 {kind} JOIN (SELECT * FROM TABLE(TUMBLE(TABLE asks, DESCRIPTOR(ts), INTERVAL '1' SECOND))) r \
                 ON l.item = r.item AND l.window_start = r.window_start AND l.window_end = r.window_end \
                 AND l.price < r.price"
            ),
            "WindowJoin(",
            "item,price,ask_item,ask",
            window_oracle(kind, &bid_rows, &ask_rows, tumble, |b, a| b.price < a.price),
        )
        .await;
    }
    // Window TVFs joined directly, hopping windows: a row is in two windows.
    let hop = |ms: i64| {
        let last = ms.div_euclid(500) * 500;
        vec![last - 500, last]
    };
    check_with(
        &ddl,
        "SELECT l.item, l.price, r.item AS ask_item, r.price AS ask \
         FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND)) l \
         FULL JOIN TABLE(HOP(TABLE asks, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND)) r \
         ON l.window_end = r.window_end AND l.item = r.item AND l.window_start = r.window_start",
        "WindowJoin(joinType=[FULL]",
        "item,price,ask_item,ask",
        window_oracle("FULL", &bid_rows, &ask_rows, hop, |_, _| true),
    )
    .await;
    // Two window aggregations joined per window: bids and asks counted per item and second.
    let mut counts: BTreeMap<(i64, &str), (i64, i64)> = BTreeMap::new();
    for b in &bid_rows {
        counts.entry((b.ms.div_euclid(1000), b.item)).or_default().0 += 1;
    }
    for a in &ask_rows {
        counts.entry((a.ms.div_euclid(1000), a.item)).or_default().1 += 1;
    }
    let side = |item: &str, n: i64| {
        if n == 0 {
            format!("{NULL},{NULL}")
        } else {
            format!("{item},{n}")
        }
    };
    let expected = counts
        .iter()
        .map(|((_, item), (bids, asks))| format!("{},{}", side(item, *bids), side(item, *asks)))
        .collect();
    let per_second = |table: &str| {
        format!(
            "(SELECT window_start, window_end, item, COUNT(*) AS n \
             FROM TABLE(TUMBLE(TABLE {table}, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
             GROUP BY window_start, window_end, item)"
        )
    };
    check_with(
        &ddl,
        &format!(
            "SELECT l.item, l.n, r.item AS ask_item, r.n AS asks FROM {} l FULL JOIN {} r \
             ON l.window_start = r.window_start AND l.window_end = r.window_end \
             AND l.item = r.item",
            per_second("bids"),
            per_second("asks")
        ),
        "WindowJoin(joinType=[FULL]",
        "item,n,ask_item,asks",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn null_keys_match_nothing_in_event_time_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    // item, price, bidder (empty: NULL), ms.
    std::fs::write(
        dir.path().join("bids.csv"),
        "apple,1,,1000\napple,2,1,1100\npear,3,1,1200\nfig,4,,5000\n",
    )
    .expect("write bids");
    let ddl = ddl(dir.path());
    check_with(
        &ddl,
        "SELECT a.price, b.price AS p2 FROM bids a LEFT JOIN bids b ON a.bidder = b.bidder \
         AND b.ts BETWEEN a.ts - INTERVAL '500' MILLISECOND AND a.ts + INTERVAL '500' MILLISECOND \
         AND a.price <> b.price",
        "IntervalJoin(joinType=[LEFT]",
        "price,p2",
        vec![
            "1,<NULL>".into(),
            "2,3".into(),
            "3,2".into(),
            "4,<NULL>".into(),
        ],
    )
    .await;
    check_with(
        &ddl,
        "SELECT l.price, r.price AS p2 \
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) l \
         FULL JOIN TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) r \
         ON l.bidder = r.bidder AND l.window_start = r.window_start \
         AND l.window_end = r.window_end AND l.price < r.price",
        "WindowJoin(joinType=[FULL]",
        "price,p2",
        [
            "2,3", "1,<NULL>", "3,<NULL>", "4,<NULL>", "<NULL>,1", "<NULL>,2", "<NULL>,4",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
}
