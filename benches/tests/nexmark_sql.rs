//! Each Nexmark query in SQL (`eichhorn_benches::nexmark::sql`) gives the same result as its
//! DataStream version on a small generated input: the SQL changelog, materialized, equals the
//! DataStream output as a multiset of rows (q4: the last running average per category), at
//! parallelism 1 and 2.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use eichhorn::prelude::*;
use eichhorn_benches::nexmark::{GeneratorConfig, Query, queries, sql};
use eichhorn_sql::types::materialize;
use eichhorn_sql::{Row, Value};

/// 6,000 events at 200 a second: 30 s of event time, three tumbling windows, auctions that
/// close, sessions that end.
const EVENTS: u64 = 6_000;

fn config() -> GeneratorConfig {
    GeneratorConfig {
        events_per_s: NonZeroU64::new(200).expect("non-zero"),
        ..GeneratorConfig::default()
    }
}

fn int(v: u64) -> Value {
    Value::BigInt(v as i64)
}

fn multiset(rows: impl IntoIterator<Item = Row>) -> BTreeMap<Row, u64> {
    let mut set = BTreeMap::new();
    for row in rows {
        *set.entry(row).or_insert(0) += 1;
    }
    set
}

/// The DataStream version's output as rows.
async fn datastream(query: Query) -> BTreeMap<Row, u64> {
    let env = StreamEnv::new();
    let config = config();
    let windows = "the query's windows are valid";
    let rows = match query {
        Query::Q0 => queries::q0(&env, EVENTS, config)
            .map(|b: eichhorn_benches::nexmark::Bid| {
                vec![
                    int(b.auction),
                    int(b.bidder),
                    int(b.price),
                    Value::Timestamp(b.date_time),
                    Value::String(b.extra),
                ]
            })
            .collect_sink(),
        Query::Q1 => queries::q1(&env, EVENTS, config)
            .map(|b: eichhorn_benches::nexmark::Bid| {
                vec![
                    int(b.auction),
                    int(b.bidder),
                    int(b.price),
                    Value::Timestamp(b.date_time),
                    Value::String(b.extra),
                ]
            })
            .collect_sink(),
        Query::Q2 => queries::q2(&env, EVENTS, config)
            .map(|(a, p): (u64, u64)| vec![int(a), int(p)])
            .collect_sink(),
        Query::Q3 => queries::q3(&env, EVENTS, config)
            .map(|(name, city, state, id): (String, String, String, u64)| {
                vec![
                    Value::String(name),
                    Value::String(city),
                    Value::String(state),
                    int(id),
                ]
            })
            .collect_sink(),
        Query::Q4 => {
            let out = queries::q4(&env, EVENTS, config).collect_sink();
            env.execute("nexmark datastream").await.expect("job runs");
            // The running average per category: its last value is over every closed auction.
            let mut last = BTreeMap::new();
            for (category, average) in out.take() {
                last.insert(category, average);
            }
            return multiset(last.into_iter().map(|(c, a)| vec![int(c), int(a)]));
        }
        Query::Q5 => queries::q5(&env, EVENTS, config)
            .expect(windows)
            .map(|(end, auction, count): (i64, u64, u64)| {
                vec![Value::Timestamp(end), int(auction), int(count)]
            })
            .collect_sink(),
        Query::Q7 => queries::q7(&env, EVENTS, config)
            .expect(windows)
            .map(|(end, b): (i64, eichhorn_benches::nexmark::Bid)| {
                vec![
                    Value::Timestamp(end),
                    int(b.auction),
                    int(b.price),
                    int(b.bidder),
                    Value::Timestamp(b.date_time),
                    Value::String(b.extra),
                ]
            })
            .collect_sink(),
        Query::Q8 => queries::q8(&env, EVENTS, config)
            .expect(windows)
            .map(|(id, name, start): (u64, String, i64)| {
                vec![int(id), Value::String(name), Value::Timestamp(start)]
            })
            .collect_sink(),
        Query::Q11 => queries::q11(&env, EVENTS, config)
            .expect(windows)
            .map(|(bidder, count, start, end): (u64, u64, i64, i64)| {
                vec![
                    int(bidder),
                    int(count),
                    Value::Timestamp(start),
                    Value::Timestamp(end),
                ]
            })
            .collect_sink(),
    };
    env.execute("nexmark datastream").await.expect("job runs");
    multiset(rows.take())
}

/// The SQL version's result at `parallelism`.
async fn in_sql(query: Query, parallelism: u32) -> BTreeMap<Row, u64> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let out = sql::build(&env, query, EVENTS, config())
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .collect_sink();
    env.execute("nexmark sql")
        .await
        .unwrap_or_else(|e| panic!("{query} at P={parallelism}: {e}"));
    materialize(out.take()).unwrap_or_else(|e| panic!("{query} at P={parallelism}: {e}"))
}

async fn same_result(query: Query) {
    let expected = datastream(query).await;
    assert!(
        !expected.is_empty(),
        "{query}: the DataStream version emits nothing"
    );
    for parallelism in [1, 2] {
        let actual = in_sql(query, parallelism).await;
        if actual != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|(r, n)| actual.get(*r) != Some(n))
                .take(5)
                .collect();
            let extra: Vec<_> = actual
                .iter()
                .filter(|(r, n)| expected.get(*r) != Some(n))
                .take(5)
                .collect();
            panic!(
                "{query} at P={parallelism}: {} rows in SQL, {} in DataStream; \
                 DataStream only (first 5): {missing:?}; SQL only (first 5): {extra:?}",
                actual.len(),
                expected.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q0_in_sql_equals_the_datastream_version() {
    same_result(Query::Q0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q1_in_sql_equals_the_datastream_version() {
    same_result(Query::Q1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q2_in_sql_equals_the_datastream_version() {
    same_result(Query::Q2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q3_in_sql_equals_the_datastream_version() {
    same_result(Query::Q3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q4_in_sql_equals_the_datastream_version() {
    same_result(Query::Q4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q5_in_sql_equals_the_datastream_version() {
    same_result(Query::Q5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q7_in_sql_equals_the_datastream_version() {
    same_result(Query::Q7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q8_in_sql_equals_the_datastream_version() {
    same_result(Query::Q8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q11_in_sql_equals_the_datastream_version() {
    same_result(Query::Q11).await;
}

/// The plan of `query` over the `bid` table.
fn plan_of(query: Query) -> String {
    let env = StreamEnv::new();
    let mut tenv = eichhorn_sql::TableEnv::new(&env);
    let rows = env.from_collection(Vec::<Row>::new());
    tenv.from_data_stream("bid", rows, sql::bid_schema(true))
        .expect("register bid");
    tenv.sql_query(sql::query_sql(query))
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .explain()
}

/// q5 and q7 run as Flink plans them, with state bounded by the watermark: q5's `MaxBids` is
/// a cascaded window aggregation and its join a window join; q7's join an interval join with
/// the window rows at their window time.
#[test]
fn q5_and_q7_keep_their_windows_through_the_plan() {
    let q5 = plan_of(Query::Q5);
    assert!(q5.contains("WindowJoin(joinType=[INNER]"), "{q5}");
    assert!(q5.contains("windowOn=[$"), "{q5}");
    assert!(!q5.contains("GroupAggregate"), "{q5}");
    let q7 = plan_of(Query::Q7);
    assert!(
        q7.contains(
            "right time in [left time + 0 ms, left time + 9999 ms], right time = window_end - 1 ms"
        ),
        "{q7}"
    );
    assert!(!q7.contains(" Join("), "{q7}");
}
