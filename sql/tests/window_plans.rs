//! Plans that keep a window aggregation's windows (`eichhorn_sql::window_plans`) against a
//! plain sequential computation, at parallelism 1, 2 and 4: cascaded window aggregations
//! (a `GROUP BY` over a window aggregation's window columns, Nexmark q5's `MaxBids`), the
//! window join of two of them with a residual condition (q5), and interval joins of rows
//! with a window aggregation's rows at their window time (q7), with the bounds in `WHERE`
//! or `ON`, in Flink's `BETWEEN window_end - INTERVAL .. AND window_end` form, on either side,
//! over hopping windows, and as a `LEFT` join. Each checks its plan with `EXPLAIN`, and the
//! queries the rules must not capture keep their old plans (and results).
//!
//! The bids are out of order by less than the watermark's delay, so no row is late and the
//! window plans give exactly the results of the regular plans they replace.

use std::collections::BTreeMap;
use std::path::Path;

use eichhorn::StreamEnv;
use eichhorn::state::splitmix64;
use eichhorn_sql::types::{format_timestamp, materialize};
use eichhorn_sql::{TableEnv, TableResult};

const ITEMS: [&str; 6] = ["apple", "pear", "plum", "fig", "kiwi", "lime"];

/// A bid: item, price, bidder, event time (ms).
#[derive(Debug, Clone)]
struct Bid {
    item: &'static str,
    price: i64,
    bidder: i64,
    ms: i64,
}

/// Bids over about 12 s, out of order by less than the watermark delay (1 s); prices repeat,
/// so a window's highest price is often bid more than once, and within other windows too.
fn bids(count: u64, seed: u64) -> Vec<Bid> {
    (0..count)
        .map(|i| {
            let r = splitmix64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            Bid {
                item: ITEMS[(r % 6) as usize],
                price: ((r >> 8) % 40) as i64 + 1,
                bidder: ((r >> 16) % 10) as i64,
                ms: i as i64 * 60 + ((r >> 24) % 900) as i64,
            }
        })
        .collect()
}

/// `data` with the highest bids of some windows at their edges: at a window's first and last
/// millisecond, and at the end of one (so in the next window, and in the window it ends for
/// `ts <= window_end`). Each goes where its time keeps the input out of order by less than
/// the watermark delay, so none is late.
fn with_edges(mut data: Vec<Bid>) -> Vec<Bid> {
    for (ms, bidder) in [(2_000, 1), (3_999, 2), (6_000, 3), (7_500, 4), (8_000, 5)] {
        let bid = Bid {
            item: "edge",
            price: 100,
            bidder,
            ms,
        };
        data.insert(ms as usize / 60 - 7, bid);
    }
    data
}

fn ddl(dir: &Path, bids: &[Bid]) -> String {
    let path = dir.join("bids.csv");
    let text: String = bids
        .iter()
        .map(|b| format!("{},{},{},{}\n", b.item, b.price, b.bidder, b.ms))
        .collect();
    std::fs::write(&path, text).expect("write bids");
    format!(
        "CREATE TABLE bids (
           item STRING, price BIGINT, bidder BIGINT, ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        path.display()
    )
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

/// Runs `query` after `ddl` at `parallelism`: the header and the materialized rows, sorted.
async fn run(ddl: &str, query: &str, parallelism: u32) -> (String, Vec<String>) {
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

/// The operator names of a plan's lines (`Join`, `WindowJoin`, ...).
fn operators(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter_map(|line| line.trim_start().split_once('(').map(|(name, _)| name))
        .collect()
}

/// Checks that `query`'s plan has every one of `present` (text) and none of the operators
/// `absent` (names), and that it gives `expected` (with the header `header`) at parallelism
/// 1, 2 and 4.
async fn check(
    ddl: &str,
    query: &str,
    present: &[&str],
    absent: &[&str],
    header: &str,
    mut expected: Vec<String>,
) {
    let plan = explain(ddl, query).await;
    for text in present {
        assert!(plan.contains(text), "{query}: no {text} in\n{plan}");
    }
    for operator in absent {
        assert!(
            !operators(&plan).contains(operator),
            "{query}: {operator} in\n{plan}"
        );
    }
    expected.sort();
    assert!(!expected.is_empty(), "{query}: the oracle expects no rows");
    for parallelism in [1, 2, 4] {
        let (columns, lines) = run(ddl, query, parallelism).await;
        assert_eq!(columns, header, "{query} at P={parallelism}");
        assert_eq!(
            lines, expected,
            "{query} at P={parallelism}: result differs from the oracle"
        );
    }
}

fn ts(ms: i64) -> String {
    format_timestamp(ms)
}

/// The windows `[start, end)` of a hop of `slide` and `size` holding `ms`.
fn hops(ms: i64, slide: i64, size: i64) -> Vec<(i64, i64)> {
    let last = ms.div_euclid(slide) * slide;
    (0..size / slide)
        .map(|k| last - k * slide)
        .map(|start| (start, start + size))
        .collect()
}

/// The bids per hop window (2 s every 500 ms) and item.
fn counts_per_window(data: &[Bid]) -> BTreeMap<(i64, i64), BTreeMap<&'static str, i64>> {
    let mut counts: BTreeMap<(i64, i64), BTreeMap<&str, i64>> = BTreeMap::new();
    for b in data {
        for window in hops(b.ms, 500, 2_000) {
            *counts.entry(window).or_default().entry(b.item).or_default() += 1;
        }
    }
    counts
}

const PER_ITEM: &str = "SELECT item, COUNT(*) AS num, window_start AS starttime, window_end AS endtime \
     FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '2' SECOND)) \
     GROUP BY item, window_start, window_end";

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_group_by_over_a_window_aggregations_windows_is_a_window_aggregation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(200, 41);
    let ddl = ddl(dir.path(), &data);
    let counts = counts_per_window(&data);
    let expected = counts
        .iter()
        .map(|((start, end), items)| {
            let max = items.values().max().expect("a window has bids");
            let sum: i64 = items.values().sum();
            format!("{},{},{max},{sum},{}", ts(*start), ts(*end), items.len())
        })
        .collect();
    // The keys in another order than the window columns, renamed.
    let query = format!(
        "SELECT C.starttime, C.endtime, MAX(C.num) AS maxn, SUM(C.num) AS bids, COUNT(*) AS items \
         FROM ({PER_ITEM}) AS C GROUP BY C.endtime, C.starttime"
    );
    check(
        &ddl,
        &query,
        &["WindowAggregate(window=[HOP(slide=500 ms, size=2000 ms)], windowOn=[$1, $0]"],
        &["GroupAggregate"],
        "starttime,endtime,maxn,bids,items",
        expected,
    )
    .await;
    let plan = explain(&ddl, &query).await;
    assert!(plan.contains("append-only (+I)"), "{plan}");

    // With a further key: per window and bidder parity, over counts per item and bidder.
    let mut per_parity: BTreeMap<(i64, i64, i64), Vec<i64>> = BTreeMap::new();
    let mut per_item_bidder: BTreeMap<(i64, i64, &str, i64), i64> = BTreeMap::new();
    for b in &data {
        for (start, end) in hops(b.ms, 500, 2_000) {
            *per_item_bidder
                .entry((start, end, b.item, b.bidder))
                .or_default() += 1;
        }
    }
    for ((start, end, _, bidder), n) in per_item_bidder {
        per_parity
            .entry((start, end, bidder % 2))
            .or_default()
            .push(n);
    }
    let expected = per_parity
        .iter()
        .map(|((_, end, parity), ns)| {
            let max = ns.iter().max().expect("one count");
            format!("{},{parity},{max},{}", ts(*end), ns.len())
        })
        .collect();
    check(
        &ddl,
        "SELECT endtime, parity, MAX(num) AS maxn, COUNT(*) AS n FROM ( \
           SELECT bidder % 2 AS parity, COUNT(*) AS num, window_start AS starttime, \
             window_end AS endtime \
           FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '2' SECOND)) \
           GROUP BY item, bidder, window_start, window_end) \
         GROUP BY starttime, endtime, parity",
        &["windowOn=[$0, $1], groupBy=[3 keys]"],
        &["GroupAggregate"],
        "endtime,parity,maxn,n",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hot_items_join_two_aggregations_of_the_same_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(200, 42);
    let ddl = ddl(dir.path(), &data);
    // Nexmark q5: per window, the items with the most bids (every one of them on a tie).
    let mut expected = Vec::new();
    for ((_, end), items) in counts_per_window(&data) {
        let max = *items.values().max().expect("a window has bids");
        for (item, n) in items {
            if n >= max {
                expected.push(format!("{},{item},{n}", ts(end)));
            }
        }
    }
    check(
        &ddl,
        &format!(
            "SELECT AuctionBids.endtime, AuctionBids.item, AuctionBids.num \
             FROM ({PER_ITEM}) AS AuctionBids \
             JOIN ( \
               SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime \
               FROM ({PER_ITEM}) AS CountBids \
               GROUP BY CountBids.starttime, CountBids.endtime \
             ) AS MaxBids \
             ON AuctionBids.starttime = MaxBids.starttime \
               AND AuctionBids.endtime = MaxBids.endtime \
               AND AuctionBids.num >= MaxBids.maxn"
        ),
        &["WindowJoin(joinType=[INNER]", "where=[..]", "windowOn="],
        &["GroupAggregate", "Join"],
        "endtime,item,num",
        expected,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queries_the_window_rules_do_not_capture_keep_their_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bids(200, 43);
    let ddl = ddl(dir.path(), &data);
    let counts = counts_per_window(&data);
    // A GROUP BY over window_start only: a group aggregation (an updating result).
    let mut per_start: BTreeMap<i64, i64> = BTreeMap::new();
    for ((start, _), items) in &counts {
        let max = *items.values().max().expect("bids");
        let entry = per_start.entry(*start).or_default();
        *entry = (*entry).max(max);
    }
    check(
        &ddl,
        &format!("SELECT starttime, MAX(num) AS maxn FROM ({PER_ITEM}) GROUP BY starttime"),
        &["GroupAggregate", "updating"],
        &[],
        "starttime,maxn",
        per_start
            .iter()
            .map(|(start, max)| format!("{},{max}", ts(*start)))
            .collect(),
    )
    .await;
    // q5 with windows of another size on one side: a regular join, as before.
    let mut tumble_max: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    let mut tumble_counts: BTreeMap<(i64, i64, &str), i64> = BTreeMap::new();
    for b in &data {
        let start = b.ms.div_euclid(2_000) * 2_000;
        *tumble_counts
            .entry((start, start + 2_000, b.item))
            .or_default() += 1;
    }
    for ((start, end, _), n) in &tumble_counts {
        let entry = tumble_max.entry((*start, *end)).or_default();
        *entry = (*entry).max(*n);
    }
    let mut expected = Vec::new();
    for ((start, end), items) in &counts {
        if let Some(max) = tumble_max.get(&(*start, *end)) {
            for (item, n) in items {
                if n >= max {
                    expected.push(format!("{},{item},{n}", ts(*end)));
                }
            }
        }
    }
    check(
        &ddl,
        &format!(
            "SELECT A.endtime, A.item, A.num FROM ({PER_ITEM}) AS A \
             JOIN ( \
               SELECT MAX(C.num) AS maxn, C.starttime, C.endtime \
               FROM (SELECT item, COUNT(*) AS num, window_start AS starttime, window_end AS endtime \
                     FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND)) \
                     GROUP BY item, window_start, window_end) AS C \
               GROUP BY C.starttime, C.endtime \
             ) AS M \
             ON A.starttime = M.starttime AND A.endtime = M.endtime AND A.num >= M.maxn"
        ),
        &["Join(joinType=[INNER]", "windowOn="],
        &["WindowJoin"],
        "endtime,item,num",
        expected,
    )
    .await;
    // q7 with only a lower bound on the bid's time: no interval, a regular join.
    let maxima = tumble_maxima(&data, 1_000);
    let mut expected = Vec::new();
    for b in &data {
        for (&(start, end), &max) in &maxima {
            if b.price == max && b.ms >= start {
                expected.push(format!("{},{},{}", ts(end), b.item, b.price));
            }
        }
    }
    check(
        &ddl,
        &format!(
            "SELECT B1.window_end, B.item, B.price FROM bids B JOIN ({MAX_PRICE}) B1 \
             ON B.price = B1.maxprice WHERE B.ts >= B1.window_start"
        ),
        &["Join(joinType=[INNER]"],
        &["IntervalJoin", "WindowJoin"],
        "window_end,item,price",
        expected,
    )
    .await;
}

const MAX_PRICE: &str = "SELECT MAX(price) AS maxprice, window_start, window_end \
     FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
     GROUP BY window_start, window_end";

/// The highest price per tumbling window of `size` ms.
fn tumble_maxima(data: &[Bid], size: i64) -> BTreeMap<(i64, i64), i64> {
    let mut maxima: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for b in data {
        let start = b.ms.div_euclid(size) * size;
        let entry = maxima.entry((start, start + size)).or_default();
        *entry = (*entry).max(b.price);
    }
    maxima
}

/// The q7 oracle: `window_end,item,price,bidder` of every bid whose price is the highest of a
/// window (`maxima`) and whose time `within` that window's `(start, end)`.
fn highest_bids(
    data: &[Bid],
    maxima: &BTreeMap<(i64, i64), i64>,
    within: impl Fn(i64, i64, i64) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for b in data {
        for (&(start, end), &max) in maxima {
            if b.price == max && within(b.ms, start, end) {
                out.push(format!("{},{},{},{}", ts(end), b.item, b.price, b.bidder));
            }
        }
    }
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn highest_bids_join_window_rows_in_a_time_bounded_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = with_edges(bids(200, 44));
    let ddl = ddl(dir.path(), &data);
    let maxima = tumble_maxima(&data, 1_000);
    let header = "window_end,item,price,bidder";
    // Nexmark q7 as in `eichhorn-benches`: the bounds in WHERE.
    check(
        &ddl,
        &format!(
            "SELECT B1.window_end, B.item, B.price, B.bidder FROM bids B JOIN ({MAX_PRICE}) B1 \
             ON B.price = B1.maxprice \
             WHERE B.ts >= B1.window_start AND B.ts < B1.window_end"
        ),
        &[
            "IntervalJoin(joinType=[INNER], keys=[$l1 = $r0], right time in [left time + 0 ms, left time + 999 ms], right time = window_end - 1 ms, where=[..]",
            "append-only (+I)",
        ],
        &["Join"],
        header,
        highest_bids(&data, &maxima, |ms, start, end| start <= ms && ms < end),
    )
    .await;
    // Flink's text: `BETWEEN window_end - 1 s AND window_end` also admits a bid at the end.
    check(
        &ddl,
        &format!(
            "SELECT B1.window_end, B.item, B.price, B.bidder FROM bids B JOIN ({MAX_PRICE}) B1 \
             ON B.price = B1.maxprice \
             WHERE B.ts BETWEEN B1.window_end - INTERVAL '1' SECOND AND B1.window_end"
        ),
        &["right time in [left time + -1 ms, left time + 999 ms], right time = window_end - 1 ms"],
        &["Join"],
        header,
        highest_bids(&data, &maxima, |ms, _, end| end - 1_000 <= ms && ms <= end),
    )
    .await;
    // The window rows on the left, the bounds in ON (strict on both ends).
    check(
        &ddl,
        &format!(
            "SELECT B1.window_end, B.item, B.price, B.bidder FROM ({MAX_PRICE}) B1 JOIN bids B \
             ON B1.maxprice = B.price AND B1.window_start < B.ts AND B.ts < B1.window_end"
        ),
        &["right time in [left time + -998 ms, left time + 0 ms], left time = window_end - 1 ms"],
        &["Join"],
        header,
        highest_bids(&data, &maxima, |ms, start, end| start < ms && ms < end),
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn time_bounded_joins_of_window_rows_over_hops_and_as_outer_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = with_edges(bids(200, 45));
    let ddl = ddl(dir.path(), &data);
    // Hopping windows: a bid is in four windows, joined with each whose highest price it is.
    let mut maxima: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for b in &data {
        for window in hops(b.ms, 500, 2_000) {
            let entry = maxima.entry(window).or_default();
            *entry = (*entry).max(b.price);
        }
    }
    check(
        &ddl,
        "SELECT W.window_end, B.item, B.price, B.bidder FROM bids B JOIN ( \
           SELECT MAX(price) AS maxprice, window_start, window_end \
           FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '2' SECOND)) \
           GROUP BY window_start, window_end) W \
         ON B.price = W.maxprice AND B.ts >= W.window_start AND B.ts < W.window_end",
        &["right time in [left time + 0 ms, left time + 1999 ms], right time = window_end - 1 ms"],
        &["Join"],
        "window_end,item,price,bidder",
        highest_bids(&data, &maxima, |ms, start, end| start <= ms && ms < end),
    )
    .await;
    // A LEFT join with the bounds in ON: every bid, padded unless it is its window's highest.
    let maxima = tumble_maxima(&data, 1_000);
    let mut expected = Vec::new();
    for b in &data {
        let start = b.ms.div_euclid(1_000) * 1_000;
        if maxima[&(start, start + 1_000)] == b.price {
            expected.push(format!("{},{},{}", b.item, b.price, ts(start + 1_000)));
        } else {
            expected.push(format!("{},{},<NULL>", b.item, b.price));
        }
    }
    check(
        &ddl,
        &format!(
            "SELECT B.item, B.price, B1.window_end FROM bids B LEFT JOIN ({MAX_PRICE}) B1 \
             ON B.price = B1.maxprice AND B.ts >= B1.window_start AND B.ts < B1.window_end"
        ),
        &["IntervalJoin(joinType=[LEFT]", "window_end - 1 ms"],
        &["Join"],
        "item,price,window_end",
        expected,
    )
    .await;
    // A LEFT join bounded in WHERE: the filter is not a join condition of an outer join.
    let plan = explain(
        &ddl,
        &format!(
            "SELECT B.item FROM bids B LEFT JOIN ({MAX_PRICE}) B1 ON B.price = B1.maxprice \
             WHERE B.ts >= B1.window_start AND B.ts < B1.window_end"
        ),
    )
    .await;
    assert!(plan.contains("Join(joinType=[LEFT]"), "{plan}");
    assert!(!operators(&plan).contains(&"IntervalJoin"), "{plan}");
}
